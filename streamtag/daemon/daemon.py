"""The daemon: sources in threads feed one engine; its results go out on ZeroMQ.

Life cycle: ``start()`` first opens the metrics port when there is one (its ``/healthz``
answers while a large model loads, its ``/readyz`` says not yet), loads the model (a bad file
raises ``ModelError``), binds the publisher and the control socket (one that cannot be bound
raises ``ConfigError`` naming its key, after releasing whatever was already taken), starts the
engine and one thread per source of this daemon's shard (``[shard]``, ``--shard K/N``).
``stop()`` drains (``/readyz`` turns not ready at once): sources stop, each stream's last
audio is framed, scored and published, every stream publishes its final status (``ended`` or
``failed``), then the sockets close with a linger. A failing source reports ``failed`` with
the reason and never stops the others.

The daemon composes its parts: what subscribers hear goes through its `Broadcast`
(``daemon/broadcast.py``: messages in order, the heartbeat); what a control request may open or
load is its `ControlPolicy` (``daemon/policy.py``: the allow-list of ``[control]``), and control
requests need the control token (or an admin's CURVE key, ``streamtag.wire.control``) and leave
room for at most ``max_sources`` running streams. The status of the last ``ENDED_KEPT`` ended
streams is kept; older ones are forgotten.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from streamtag.catalog.installed import resolve_model
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.broadcast import Broadcast
from streamtag.daemon.config import DaemonConfig, SourceConfig, unknown_stream
from streamtag.daemon.policy import ControlPolicy
from streamtag.daemon.shard import ShardConfig
from streamtag.engine.batching import Engine, WindowResult
from streamtag.engine.content import MUSIC
from streamtag.engine.health import SilenceEvent
from streamtag.engine.smoothing import TagEvent
from streamtag.engine.speech import SpeechPlan
from streamtag.engine.tracks import TrackSummarizer, TrackSummary
from streamtag.errors import ConfigError, ModelError, SourceError
from streamtag.model.inference import InferenceModel, keep_freed_memory
from streamtag.sources import AudioChunk, Source, SourceSpec, parse_source
from streamtag.sources.decode_turns import Turns
from streamtag.sources.hosts import redact_url
from streamtag.text import counted
from streamtag.wire.control import ControlServer, default_token_file, ensure_token
from streamtag.wire.descriptors import ConnectionCaps, raise_files_limit, say_fitted
from streamtag.wire.publisher import Publisher
from streamtag.wire.replay import ReplayServer
from streamtag.wire.requests import (
    AddSource,
    ReloadModel,
    RemoveSource,
    Reply,
    Snapshot,
    Status,
    handlers_for,
)
from streamtag.wire.security import (
    CONTROL_DOMAIN,
    FEED_DOMAIN,
    Authenticator,
    CurveKeys,
    load_keys,
)

if TYPE_CHECKING:  # imported where the metrics port opens: a worker has none
    from streamtag.daemon.metrics import DaemonMetrics, Histograms

log = logging.getLogger(__name__)

FINAL_STATES = ("ended", "failed")
RECENT_TRACKS = 10  # finished tracks per stream that the status reply lists
# With [publish] connect: how long start() waits for the peer (a proxy) before the sources
# start, so that their first messages are not dropped unseen.
CONNECTED_WAIT_S = 5.0
TURN_SLICE_S = 0.002  # a source thread works this long before others get their turn
ENDED_KEPT = 64  # ended streams whose status (and metrics) are kept, the latest ones


def _build_source(source: SourceConfig, spec: SourceSpec | None = None) -> Source:
    """The source a config names (not opened yet), or the spec already read and checked from
    it; ConfigError naming it and the option."""
    try:
        return parse_source(spec or source.spec, **source.options)
    except SourceError as exc:
        raise ConfigError(f"source {source.id!r}: {exc}") from exc


def _endpoint_error(key: str, flag: str, endpoint: str, exc: OSError, *,
                    connect: bool = False) -> ConfigError:
    """A ZeroMQ endpoint that cannot be bound (or connected), as a one-line ConfigError naming
    the key, the endpoint and what to do."""
    reason = zmq.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        fix = f"another process holds it: stop that process, or set another {key} ({flag})"
    else:
        fix = (f"check {key} ({flag}): a tcp host must be an address or interface of this "
               "machine (* for all), an ipc path's directory must exist")
    verb = "connect to" if connect else "bind"
    return ConfigError(f"{key} {endpoint}: cannot {verb} it ({reason}); {fix}")


@dataclasses.dataclass
class _SourceRun:
    config: SourceConfig
    source: Source
    stop: threading.Event
    thread: threading.Thread | None = None
    state: str = "starting"
    error: str | None = None
    title: str | None = None
    heard_from_start: bool | None = None  # of the title's track, where the source knows
    station: str | None = None  # the station's name, as the source reports it (icy-name)
    logged_error: str | None = None  # the reconnecting error last logged, until audio again
    level: dict | None = None  # the last window's audio level (scores ``audio``), if any
    final: tuple[str, str | None] | None = None
    stream_added: bool = False
    tracks: TrackSummarizer | None = None  # guarded by track_lock: source and engine threads
    track_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    recent_tracks: deque = dataclasses.field(
        default_factory=lambda: deque(maxlen=RECENT_TRACKS))

    @property
    def shown_source(self) -> str:
        """The source as published and logged: a URL without its secrets."""
        return redact_url(self.source.description)

    def shown(self, text: str | None) -> str | None:
        """``text`` (an error) with the source's URL, as the source itself wrote it, replaced
        by ``shown_source``: a station's error names the URL, query tokens and all."""
        if text is None:
            return None
        for written in {self.source.description, self.config.spec.strip()}:
            if written and written != redact_url(written):
                text = text.replace(written, redact_url(written))
        return text


class Daemon:
    def __init__(self, config: DaemonConfig, keep_histograms: bool = False) -> None:
        """``keep_histograms``: observe the metrics' histograms even without a metrics port,
        for the ``status`` requests that ask for them (a worker of ``run --processes``, whose
        supervisor serves them)."""
        self.config = config
        self.model: InferenceModel | None = None
        self.speech: SpeechPlan | None = None  # who decides speech, chosen at start
        self.engine: Engine | None = None
        self.publisher: Publisher | None = None  # the broadcast's, once bound
        self.broadcast: Broadcast | None = None
        self.policy = ControlPolicy(config.control)
        self.control: ControlServer | None = None
        self.replay: ReplayServer | None = None  # with [publish] replay_endpoint
        self.metrics: DaemonMetrics | None = None
        self.histograms: Histograms | None = None  # the metrics port's, or kept for a supervisor
        self._keep_histograms = keep_histograms
        self._runs: dict[str, _SourceRun] = {}
        self._ended_runs: deque[_SourceRun] = deque()  # in the order they ended
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._started_at = time.monotonic()
        self.shard: ShardConfig = config.shard.resolve()  # "auto": K from the host name
        self._serving = False  # model loaded, sockets bound, sources started
        self._draining = False
        for source in config.sources:  # a bad source fails here, before anything binds
            _build_source(source)
        self._context: zmq.Context | None = None  # own context only with [security]
        self._turns = Turns(config.engine.decoder_turns())  # the source threads take turns
        self._auth: Authenticator | None = None
        self.token_file: Path | None = None
        self._caps_said: dict[str, ConnectionCaps] | None = None
        self.files_limit: int | None = None  # the open-files limit, once raised at start

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Daemon:
        cfg = self.config
        path = resolve_model(cfg.model.path) or str(default_model_path())
        keep_freed_memory()
        # before any socket: every peer costs a descriptor (docs/security.md)
        self.files_limit = raise_files_limit("daemon")
        self.serve_health()
        try:
            self._control_token(cfg)  # a token file open to others stops us before the model
            self.model = model = InferenceModel.load(path, device=cfg.model.device,
                                                     backend=cfg.engine.backend,
                                                     threads=cfg.engine.threads,
                                                     precision=cfg.engine.precision)
        except BaseException:
            self.stop()  # release the metrics port
            raise
        # who decides speech (the engine is handed the plan), said once in the model's line
        self.speech = SpeechPlan.installed() if cfg.content.enabled else None
        try:
            self._start_serving(cfg, model)
        except BaseException:
            self.stop()  # release what was taken: sockets, threads, the authenticator
            raise
        # once serving: a daemon that cannot start says why in one line, and only that
        missing = self.speech is not None and self.speech.detector is None
        log.log(logging.WARNING if missing else logging.INFO,
                "model %s: %d tags, %s input, window %d, hop %d, on %s with %s; content: %s",
                self.model.name, len(self.model.tags), self.model.input_kind, self.model.window,
                self.model.hop, self.model.device, self.model.backend,
                "off" if self.speech is None else self.speech.note)
        return self

    def _control_token(self, cfg: DaemonConfig) -> None:
        """With a control socket: a new token in the token file, or the one it holds with
        ``[control] pin_token`` (a file or folder that others may read or write, or that is
        a link, is a ConfigError naming it)."""
        if not cfg.control.endpoint:
            return
        self.token_file = Path(cfg.control.token_file or default_token_file()).expanduser()
        ensure_token(self.token_file, pin=cfg.control.pin_token)

    def serve_health(self) -> None:
        """Opens the metrics port (with ``/healthz`` and ``/readyz``) now, if there is one;
        ``start()`` calls it before loading the model. ConfigError naming the key when the
        port cannot be had."""
        cfg = self.config
        if self.metrics is not None or self.histograms is not None:
            return
        if not cfg.metrics.port:
            if self._keep_histograms:
                from streamtag.daemon.metrics import Histograms

                self.histograms = Histograms()
            return
        from streamtag.daemon.metrics import DaemonMetrics, metrics_error

        try:
            self.metrics = DaemonMetrics(self, cfg.metrics.port, cfg.metrics.address,
                                         limits=cfg.metrics.limits)
        except OSError as exc:
            raise metrics_error(cfg.metrics.address, cfg.metrics.port, exc) from exc
        self.histograms = self.metrics.histograms

    def readiness(self) -> tuple[bool, str]:
        """Whether an orchestrator may count on this daemon (``/readyz``), and why (not)."""
        if self._draining or self._stopped.is_set():
            return False, "draining: stopping, the last windows are being published"
        if self.model is None:
            return False, "loading the model"
        if not self._serving:
            return False, "binding sockets and starting sources"
        with self._lock:
            streams = len(self._runs)
        return True, (f"ready: {self.shard.name}, {counted(streams, 'stream')}, model "
                      f"{self.model.name}")

    def connection_caps(self, sources: int) -> dict[str, ConnectionCaps]:
        """The caps of the ZeroMQ ports this daemon binds ("publish", "control", "replay"),
        fitted within what the open-files limit leaves with ``sources`` running
        (streamtag.wire.descriptors)."""
        wanted, fitted, room = self.config.port_caps(self.files_limit, sources)
        if fitted != wanted and fitted != self._caps_said:
            self._caps_said = fitted  # said once per change, not at every source added
            say_fitted("daemon", self.files_limit, room,
                       [(f"{key}.endpoint", wanted[key], fitted[key]) for key in wanted])
        return fitted

    def _refit_connection_caps(self) -> None:
        """The ports' caps again, as sources start and end (each keeps descriptors)."""
        with self._lock:
            running = sum(1 for r in self._runs.values() if r.final is None)
        caps = self.connection_caps(running)
        for key, guarded in (("publish", self.publisher), ("control", self.control),
                             ("replay", self.replay)):
            guard = getattr(guarded, "guard", None)
            if guard is not None and key in caps:
                guard.set_caps(caps[key])

    def _start_serving(self, cfg: DaemonConfig, model: InferenceModel) -> None:
        curve = self._secure(cfg)
        mine = [source for source in cfg.sources if self.shard.owns(source.id)]
        caps = self.connection_caps(len(mine))
        try:
            self.publisher = Publisher(cfg.publish.endpoint, sndhwm=cfg.publish.sndhwm,
                                       connect=cfg.publish.connect, context=self._context,
                                       curve=curve, connected_wait_s=CONNECTED_WAIT_S,
                                       caps=caps.get("publish"),
                                       ring_bytes=cfg.publish.replay_bytes
                                       if cfg.publish.replay_endpoint else None)
        except OSError as exc:
            raise _endpoint_error("publish.endpoint", "--publish", cfg.publish.endpoint,
                                  exc, connect=cfg.publish.connect) from exc
        if self.publisher.ring is not None:
            try:
                self.replay = ReplayServer(cfg.publish.replay_endpoint, self.publisher.ring,
                                           context=self._context, curve=curve,
                                           caps=caps.get("replay")).start()
            except OSError as exc:
                raise _endpoint_error("publish.replay_endpoint", "--replay",
                                      cfg.publish.replay_endpoint, exc) from exc
        self.broadcast = Broadcast(self.publisher)
        self.engine = Engine(model, self, cfg.engine, cfg.smoothing, cfg.mood, cfg.health,
                             cfg.content, speech=self.speech)
        if self.histograms is not None:
            self.engine.on_batch = self.histograms.observe_batch
        self.engine.start()
        if cfg.control.endpoint:
            try:
                self.control = ControlServer(cfg.control.endpoint, handlers_for(self),
                                             context=self._context, curve=curve,
                                             token_file=self.token_file,
                                             caps=caps.get("control")).start()
            except OSError as exc:
                raise _endpoint_error("control.endpoint", "--control", cfg.control.endpoint,
                                      exc) from exc
        self.broadcast.start_heartbeat(cfg.publish.heartbeat_s, self._running_streams)
        if self.shard.count > 1:
            log.info("%s: serving %d of the %d sources", self.shard.name, len(mine),
                     len(cfg.sources))
        for source in mine:
            self.add_source(source)
        self._serving = True

    def _secure(self, cfg: DaemonConfig) -> CurveKeys | None:
        """With [security]: a private ZeroMQ context whose authenticator admits only the
        subscribers' keys on the PUB socket and only the administrators' on the control
        socket, and the daemon's CURVE keys for its sockets."""
        if cfg.security.server_key is None:
            return None
        keys = load_keys(cfg.security.server_key, need_secret=True)
        if cfg.control.endpoint and cfg.security.admin_keys is None:
            log.warning("control socket %s admits no CURVE key: security.admin_keys is not "
                        "set, so no client can make control requests; make an admin key "
                        "(streamtag keys generate DIR --name admin) and put its .key in a "
                        "folder named by security.admin_keys", cfg.control.endpoint)
        self._context = zmq.Context()
        self._auth = Authenticator(self._context, {
            FEED_DOMAIN: ("security.client_keys", cfg.security.client_keys),
            CONTROL_DOMAIN: ("security.admin_keys", cfg.security.admin_keys)})
        return keys

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until ``stop()`` has finished (or the timeout); True when stopped."""
        return self._stopped.wait(timeout)

    def failed_streams(self) -> list[tuple[str, str]]:
        """(stream, why) of each stream whose source failed, by id: what ``--exit-when-done``
        reports when they have all ended."""
        return [(sid, str(state.get("error") or "no reason given"))
                for sid, state in sorted(self.status()["streams"].items())
                if state.get("state") == "failed"]

    def idle(self) -> bool:
        """True when every stream has published its final status (nothing more will come):
        not merely its source ended, since its last windows are scored after that."""
        with self._lock:
            return all(r.state in FINAL_STATES for r in self._runs.values())

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drains and shuts down; safe to call twice."""
        if self._stopped.is_set():
            return
        self._draining = True
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
        deadline = time.monotonic() + timeout_s
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))
        if self.engine is not None:
            self.engine.stop()  # scores what is queued; streams publish their final status
        if self.control is not None:
            self.control.stop()
        if self.replay is not None:
            self.replay.stop()
        if self.metrics is not None:
            self.metrics.close()
        self._stopped.set()
        if self.broadcast is not None:
            self.broadcast.close()
        if self._auth is not None:
            self._auth.stop()
            self._context.term()

    def _running_streams(self) -> int:
        """Streams whose source still runs: the heartbeat's count."""
        with self._lock:
            return sum(1 for r in self._runs.values() if r.final is None)

    # -- sources ---------------------------------------------------------------------------

    def add_source(self, source: SourceConfig, spec: SourceSpec | None = None) -> None:
        """Starts a source in its own thread (built from ``spec`` when given: the spec as a
        control request's checks read it). ConfigError for a duplicate id, bad options, or a
        stream of another shard."""
        self.shard.check_owns(source.id)
        with self._lock:
            if source.id in self._runs and self._runs[source.id].final is None:
                raise ConfigError(f"a source with id {source.id!r} is already running")
        run = _SourceRun(source, _build_source(source, spec), threading.Event())
        run.thread = threading.Thread(target=self._run_source, args=(run,),
                                      name=f"streamtag-source-{source.id}", daemon=True)
        with self._lock:
            self._runs[source.id] = run
        if self._serving:  # at start the caps were fitted to the shard's sources
            self._refit_connection_caps()
        run.thread.start()

    def remove_source(self, stream_id: str) -> str:
        """Stops a source; its stream ends normally (last windows scored, ``ended``). A stream
        that has already ended or failed is forgotten instead (it leaves status and the
        metrics). Returns what was done: "stopping", or the forgotten stream's final state."""
        forgotten = None
        with self._lock:
            run = self._runs.get(stream_id)
            if run is None:
                raise ConfigError(unknown_stream(stream_id, self._runs))
            if run.final is not None:
                del self._runs[stream_id]
                if run in self._ended_runs:
                    self._ended_runs.remove(run)
                forgotten = run.final[0]
        if forgotten is None:
            run.stop.set()
            return "stopping"
        if self.histograms is not None:
            self.histograms.forget_stream(stream_id)
        return forgotten

    def _on_source_status(self, run: _SourceRun, state: str, error: str | None,
                          extra: dict) -> None:
        run.station = extra.get("station", run.station)
        if "title" in extra and run.config.title is None:  # a configured title wins
            if extra["title"] != run.title and self.engine is not None:
                self.engine.new_track(run.config.id)  # the venue's genre line starts afresh
            run.title = extra["title"]
            run.heard_from_start = extra.get("heard_from_start")
            if run.tracks is not None:
                sample = extra.get("title_sample")
                if sample is None:  # a source that does not place its titles: now
                    sample = run.source.counters.get("samples", 0)
                with run.track_lock:
                    run.tracks.change_title(run.title, sample, extra.get("title_at"),
                                            run.heard_from_start)
        if state in FINAL_STATES:
            return  # published by the daemon once the stream's last window is out
        # Logged once per change (a station down for hours retries hundreds of times).
        if state == "reconnecting" and error != run.logged_error:
            run.logged_error = error
            log.warning("source %s (%s): %s; retrying with back-off (logged again when this "
                        "changes)", run.config.id, run.shown_source, run.shown(error))
        elif state == "running" and run.logged_error is not None:
            run.logged_error = None
            log.warning("source %s (%s): audio again after %d reconnects", run.config.id,
                        run.shown_source, run.source.counters.get("reconnects", 0))
        run.state, run.error = state, error
        self._publish_status(run, state, error)

    def _counters(self, run: _SourceRun) -> dict:
        """The source's counters and the engine's for this stream. NaN/Inf samples are zeroed
        (and counted) before resampling by the source, else by the frontend: ``nonfinite`` is
        their sum."""
        counters = dict(run.source.counters)
        if run.stream_added and self.engine is not None:
            try:
                engine = self.engine.stream_counters(run.config.id)
            except ValueError:
                return counters
            counters.update(engine, nonfinite=engine["nonfinite"] + counters.get("nonfinite", 0))
        return counters

    def _publish_status(self, run: _SourceRun, state: str, error: str | None) -> None:
        self.broadcast.status(run.config.id, state=state, error=run.shown(error),
                              counters=self._counters(run), title=run.title,
                              source=run.shown_source, station=run.station,
                              heard_from_start=run.heard_from_start)

    def _run_source(self, run: _SourceRun) -> None:
        sid = run.config.id
        final: tuple[str, str | None] = ("ended", None)
        run.title = run.config.title
        run.tracks = TrackSummarizer(self.model.sample_rate, run.title, time.time())
        run.source.measure_loudness = self.config.health.loudness
        try:
            run.source.open(self.model.sample_rate,
                            lambda state, error, extra: self._on_source_status(
                                run, state, error, extra))
            self.engine.add_stream(sid, live=run.source.live)
            run.stream_added = True
            run.source.turns = self._turns
            with self._turns:
                self._feed(sid, run.source.chunks(run.stop))
        except SourceError as exc:
            final = ("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - one stream's failure must not stop others
            log.exception("source %s (%s) failed", sid, run.shown_source)
            final = ("failed", f"{type(exc).__name__}: {exc}")
        finally:
            run.source.close()
        run.final = final
        if final[0] == "failed":
            log.warning("source %s (%s) failed: %s", sid, run.shown_source,
                        run.shown(final[1]))
        if run.stream_added:
            self.engine.finish_stream(sid)  # on_stream_end publishes the final status
        else:
            run.state, run.error = final
            self._publish_status(run, *final)
            self._ended(run)

    def _ended(self, run: _SourceRun) -> None:
        """``run`` published its final status: it is kept for status and metrics among the
        latest ``ENDED_KEPT`` ended streams, and the oldest beyond them are forgotten."""
        forgotten = []
        with self._lock:
            self._ended_runs.append(run)
            while len(self._ended_runs) > ENDED_KEPT:
                old = self._ended_runs.popleft()
                if self._runs.get(old.config.id) is old:  # not since added again
                    del self._runs[old.config.id]
                    forgotten.append(old.config.id)
        if self.histograms is not None:
            for sid in forgotten:
                self.histograms.forget_stream(sid)
        if self._serving and not self._draining:
            self._refit_connection_caps()

    def _feed(self, sid: str, chunks: Iterator[AudioChunk]) -> None:
        """A source's chunks into the engine, inside the thread's turn
        (streamtag.sources.decode_turns): the
        source gives it up while it waits, this loop while the engine has no room for the
        stream, and hands it on to the next in line after each time slice."""
        turns, engine = self._turns, self.engine
        with self._lock:
            run = self._runs.get(sid)
        slice_end = time.monotonic() + TURN_SLICE_S
        for chunk in chunks:
            loudness: Sequence[tuple[int, float]] = ()
            if chunk.loudness:  # dated in the source's samples: as samples before the chunk's end
                end = chunk.sample_index + len(chunk.samples)
                loudness = [(end - at, power) for at, power in chunk.loudness]
                if run is not None and run.tracks is not None:  # each track's own loudness
                    with run.track_lock:
                        run.tracks.add_loudness(chunk.loudness)
            engine.accept(sid, chunk.samples, chunk.arrival, wait=False, loudness=loudness)
            if not engine.has_room(sid):
                with turns.released():
                    engine.wait_for_room(sid)
            if turns.waiting and time.monotonic() >= slice_end:
                turns.pass_on()
                slice_end = time.monotonic() + TURN_SLICE_S

    # -- engine sink -----------------------------------------------------------------------

    def on_window(self, result: WindowResult) -> None:
        with self._lock:
            run = self._runs.get(result.stream_id)
        closed: list[TrackSummary] = []
        if run is not None and run.tracks is not None:
            with run.track_lock:
                # dead air confirmed here takes back the tags its first windows counted;
                # windows that are not music count for no tag
                closed = run.tracks.add_window(
                    result.end_sample, result.tags, result.raw, result.smoothed, result.active,
                    result.model_name, result.model_hash,
                    music=result.content in (None, MUSIC), dead_air_from=next(
                        (c.start_sample for c in result.silence if c.state == "on"), None))
        if run is not None and result.audio is not None:
            run.level = result.audio  # the last window's, for the status reply
        tracks = self.broadcast.window(result, closed)
        if run is not None:
            run.recent_tracks.extend(body.to_dict() for body in tracks)
        if self.histograms is not None:
            self.histograms.observe_window(result)

    def turn(self) -> AbstractContextManager:
        """The engine's hand-out of one turn: its messages leave together (``held``)."""
        return self.broadcast.held()

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        self.broadcast.events(stream_id, events, self.model.sample_rate)
        with self._lock:
            run = self._runs.get(stream_id)
        if run is None:
            return
        if run.tracks is not None and not run.tracks.ended:
            with run.track_lock:
                closed = run.tracks.end(round(end_s * self.model.sample_rate))
            tracks = self.broadcast.tracks(stream_id, closed)
            run.recent_tracks.extend(body.to_dict() for body in tracks)
        state, error = run.final or ("ended", None)
        run.state, run.error = state, error
        self._publish_status(run, state, error)
        self._ended(run)

    def on_silence_end(self, stream_id: str, changes: list[SilenceEvent]) -> None:
        """The stream ended while silent: its silence ends too (before its final status)."""
        self.broadcast.silence(stream_id, changes)

    # -- control ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            runs = list(self._runs.values())
        streams = {}
        for run in runs:
            counters = self._counters(run)
            streams[run.config.id] = {"state": run.state, "error": run.shown(run.error),
                                      "source": run.shown_source, "title": run.title,
                                      "counters": counters, "tracks": list(run.recent_tracks)}
            if run.station is not None:
                streams[run.config.id]["station"] = run.station
            if run.level is not None:
                streams[run.config.id]["level"] = run.level
        return {"session": self.publisher.session, "shard": {"index": self.shard.index,
                                                              "count": self.shard.count},
                "uptime_s": time.monotonic() -
                self._started_at, "model": self._model_info(), "streams": streams,
                "engine": dict(self.engine.stats), "dropped_messages": self.publisher.dropped}

    def _model_info(self) -> dict[str, Any]:
        m = self.engine.model
        return {"name": m.name, "hash": m.hash, "path": m.path, "tags": list(m.tags),
                "thresholds": [float(t) for t in m.thresholds], "input_kind": m.input_kind,
                "window": m.window, "hop": self.engine.plan.hop,
                "sample_rate": m.sample_rate, "device": str(m.device), "backend": m.backend,
                "precision": m.precision, "backend_note": m.backend_note,
                "graph_passes": list(m.graph_passes),
                "max_batch": self.engine.batch_limit,
                # who decides each window's speech ([content]): silero-vad's detector, or the
                # content network where it is not installed (None: [content] is off)
                "speech": self.engine.speech_note,
                # the forward's ms per window by batch size, where the engine measured them
                # to choose max_batch (left out of the config, on the CPU)
                "batch_ms": {str(b): round(ms, 4) for b, ms in m.batch_ms.items()}}

    def reload_model(self, path: str) -> InferenceModel:
        """Swaps the model (``path``: a model file or an installed model's name); ModelError
        (old model kept) for an unusable file or one whose sample rate differs (the sources
        resample to the running rate). No allow-list here: the caller decides what is allowed
        (``ControlPolicy.allowed_model`` for a control request)."""
        from streamtag.model.manifest import read_manifest

        path = resolve_model(path) or path  # a text is never None
        rate = read_manifest(path).frontend.sample_rate
        if rate != self.model.sample_rate:
            raise ModelError(f"{path}: sample rate {rate:g} Hz differs from the running "
                             f"{self.model.sample_rate:g} Hz; restart the daemon to change it")
        self.model = self.engine.reload_model(path)
        return self.model

    # -- control requests (streamtag.wire.requests.ControlHandler) ------------------------

    def handle_status(self, request: Status) -> Reply:
        reply = self.status()
        if request.histograms and self.histograms is not None:
            reply["histograms"] = self.histograms.samples()  # for a supervisor
        return reply

    def handle_snapshot(self, request: Snapshot) -> Reply:
        streams = self.engine.snapshot()
        with self._lock:
            runs = dict(self._runs)
        for sid, view in streams.items():
            # what a late subscriber's status messages would have told: its source's state,
            # what is playing, from where
            run = runs.get(sid)
            if run is not None:
                view.update(state=run.state, title=run.title, source=run.shown_source)
        return {"session": self.publisher.session, "model": self._model_info(),
                "streams": streams}

    def handle_add_source(self, request: AddSource) -> Reply:
        sid = request.id
        with self._lock:
            running = sum(1 for r in self._runs.values() if r.final is None)
            taken = sid in self._runs and self._runs[sid].final is None
        if taken:  # said before the spec's checks, which would name another problem
            raise ConfigError(f"add_source refuses {sid!r}: a stream with that id is already "
                              f"running; remove it first (streamtag control remove {sid}) or "
                              "choose another id")
        self.config.control.check_room(sid, running)
        spec, options = self.policy.allowed_spec(request.spec, dict(request.options))
        self.add_source(SourceConfig(sid, spec.text, options, request.title), spec)
        return {"id": sid}

    def handle_remove_source(self, request: RemoveSource) -> Reply:
        return {"id": request.id, "removed": self.remove_source(request.id)}

    def handle_reload_model(self, request: ReloadModel) -> Reply:
        self.reload_model(self.policy.allowed_model(request.path))
        return {"model": self._model_info()}
