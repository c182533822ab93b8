"""Several daemon processes on one machine behind one publish and one control endpoint
(``streamtag run --processes N``), supervised.

One daemon does its per-window work under one GIL (about 1.15-2.2 cores busy, by model); N worker
processes each run a ``Daemon`` serving shard K of N of the same source list
(streamtag.daemon.shard), and this process, the supervisor, holds what subscribers and
operators reach:

- the publish endpoint, where an XSUB/XPUB proxy (streamtag.wire.proxy, inside libzmq) hands
  on what the workers publish to an ``ipc://`` socket in a private folder (mode 0700): one
  feed, each stream from one worker with its own session and unbroken seq. With ``[publish]
  connect = true`` the workers connect to that endpoint themselves (an external proxy's
  frontend) and no proxy runs here;
- the control endpoint, with the daemon's own authority rules (its token, or an admin's CURVE
  key): ``add_source`` and ``remove_source`` go to the worker whose shard the stream id hashes
  to, ``reload_model`` to every worker, ``status`` and ``snapshot`` merge theirs. The workers
  check ``[control]``'s allow-lists themselves; the supervisor reaches their control sockets on
  ``ipc://`` in the same folder with a token of its own, made for this run;
- the metrics port, whose ``status`` is the merged one, with the restarts.

A worker that dies is started again after a back-off (0.5 s, doubling to 30 s; afresh after it
served a minute) and counted; only its streams pause, its sources come back (those of the
config and those added by control) under a new session. ``stop()`` drains every worker
(SIGTERM: each publishes its last windows and final statuses) before the proxy stops. Workers
ignore SIGINT (a Ctrl-C reaches the whole process group; the supervisor decides) and drain by
themselves when the supervisor goes away.

Processes come from ``multiprocessing`` (spawn), as uvicorn's ``--workers`` does: a fresh
interpreter per worker, the config handed over pickled, a pipe for its "ready", the process
sentinel to see it die.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from streamtag.backoff import Backoff
from streamtag.daemon.config import (
    UNKNOWN_STREAM,
    DaemonConfig,
    MetricsConfig,
    SecurityConfig,
    unknown_stream,
)
from streamtag.daemon.shard import WorkerShard
from streamtag.errors import ConfigError, ModelError
from streamtag.wire.control import ControlClient, ControlServer, default_token_file, ensure_token
from streamtag.wire.descriptors import ConnectionCaps, raise_files_limit, say_fitted
from streamtag.wire.proxy import run_proxy
from streamtag.wire.requests import (
    AddSource,
    ControlRequest,
    ReloadModel,
    RemoveSource,
    Reply,
    Snapshot,
    Status,
    handlers_for,
)
from streamtag.wire.security import (
    CONTROL_DOMAIN,
    Authenticator,
    ClientCurve,
    generate_keys,
    load_keys,
)

# What a worker stops on: streamtag.commands.stop_on_signals, handed down by the command (a
# library installs no signal handlers of its own); a module-level function, so spawn pickles it.
StopSignals = Callable[[], contextlib.AbstractContextManager[threading.Event]]
if TYPE_CHECKING:  # imported where the metrics port opens
    from streamtag.daemon.metrics import DaemonMetrics

log = logging.getLogger(__name__)

RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a worker that served this long starts its back-off afresh when it dies
DRAIN_S = 60.0  # from SIGTERM to SIGKILL for a worker that does not finish its drain
ASK_TIMEOUT_MS = 3000  # a worker's answer to a forwarded control request
RUNNING_COUNT_S = 1.0  # add_source asks the workers how many streams run at most this often
PROXY_GRACE_S = 0.5  # after the last worker: its last messages pass the proxy
WATCH_S = 0.2
EXIT_FATAL = 2  # a worker's config or model error: restarting it would not help
FINAL_STATES = ("ended", "failed")  # as streamtag.daemon.daemon's, which this does not import


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# -- the worker process ------------------------------------------------------------------------


def serve_worker(config: DaemonConfig, conn: Connection, exit_when_done: bool,
                 log_level: int, stop_signals: StopSignals, folder: str | None = None,
                 gpu_share: float | None = None) -> None:
    """A worker process: the daemon of ``config`` (its shard, its internal endpoints) until
    SIGTERM, its parent's end, or (``exit_when_done``) its streams' end. Says ``("ready",
    session)`` on ``conn`` once serving, or ``("error", text)`` and exits EXIT_FATAL for a
    config or model error. A worker that outlives the supervisor removes the run's private
    ``folder`` once it has drained (the supervisor, killed, could not). ``gpu_share``: the part
    of the GPU's memory this worker may hold when its model serves on CUDA (1/N of N workers)."""
    from streamtag.model.inference import keep_freed_memory

    keep_freed_memory()  # before any thread starts
    index = config.shard.index
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s worker {index} "
                                                "%(name)s: %(message)s")
    # SIGTERM from the supervisor (or SIGINT: Ctrl-C reaches the whole process group) drains;
    # a worker that does not finish is killed by the supervisor after DRAIN_S.
    with stop_signals() as stop:
        orphaned = _serve(config, conn, exit_when_done, stop, gpu_share)
    if orphaned and folder is not None:
        # Every worker sees the supervisor gone; whichever gets here first removes the folder
        # (the others' sockets in it serve nobody now).
        shutil.rmtree(folder, ignore_errors=True)


def _serve(config: DaemonConfig, conn: Connection, exit_when_done: bool,
           stop: threading.Event, gpu_share: float | None = None) -> bool:
    """Serves until told to stop; True when it stopped because the supervisor was gone."""
    parent = os.getppid()
    orphaned = False
    from streamtag.daemon.daemon import Daemon
    from streamtag.model.inference import share_the_gpu

    try:
        if gpu_share is not None:  # before the model takes any GPU memory
            share_the_gpu(config.model.device, gpu_share, config.engine.backend,
                          config.engine.precision)
        daemon = Daemon(config, keep_histograms=True).start()  # the supervisor serves them
    except (ConfigError, ModelError) as exc:
        conn.send(("error", (type(exc).__name__, str(exc))))
        conn.close()
        sys.exit(EXIT_FATAL)
    conn.send(("ready", daemon.publisher.session))
    draining = None
    while not daemon.wait(WATCH_S):
        if draining is not None:
            continue
        if stop.is_set() or os.getppid() != parent:
            orphaned = not stop.is_set()
            draining = threading.Thread(target=daemon.stop, name="streamtag-shutdown",
                                        daemon=True)
            draining.start()
        elif exit_when_done and config.sources and daemon.idle():
            failed = daemon.failed_streams()
            daemon.stop()
            if failed:  # for the supervisor's exit status
                conn.send(("failed", failed))
    conn.close()
    return orphaned


# -- the supervisor ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Worker:
    index: int
    backoff: Backoff
    process: Any = None  # multiprocessing's Process
    conn: Connection | None = None
    state: str = "starting"  # starting, running, restarting, done, stopped
    session: str | None = None
    restarts: int = 0
    served_since: float | None = None  # monotonic, while the current process serves
    ever_served: bool = False
    restart_at: float = 0.0
    error: tuple[str, str] | None = None  # the current process's start error: class, text
    last_exit: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class _RunTotals:
    """The run-wide counts summed over the workers (the engine's, and the batch-size and
    forward-time histograms), kept monotone while workers die and start again: each worker
    counts as last seen (while it is down or not answering too), and what it had counted under
    a session it no longer has is carried into the totals. Only what a worker counted after
    its last ``status`` reply is lost with it. Each stream's own counters and latency
    histogram come from the one worker that serves it and start again with it, as a restarted
    daemon's would (a reset, to Prometheus)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # worker index -> (session, engine counts, run-wide histogram samples), as last seen
        self._last: dict[int, tuple[Any, dict[str, Any], list[list[Any]]]] = {}
        self._retired: list[tuple[dict[str, Any], list[list[Any]]]] = [({}, [])]

    def seen(self, index: int, reply: dict[str, Any]) -> list[list[Any]]:
        """Worker ``index``'s status reply (its session, engine counts and, from a scrape, its
        histograms); returns its histograms' per-stream samples."""
        engine = {k: v for k, v in (reply.get("engine") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        samples = reply.get("histograms")
        samples = [s for s in samples if isinstance(s, list) and len(s) == 3
                   and isinstance(s[1], dict) and isinstance(s[2], (int, float))
                   and not isinstance(s[2], bool)] if isinstance(samples, list) else None
        with self._lock:
            last = self._last.get(index)
            if last is not None and last[0] != reply.get("session"):
                self._retired[0] = _summed([self._retired[0], last[1:]])
                last = None
            kept = last[2] if last is not None else []
            if samples is not None:
                kept = [s for s in samples if "stream" not in s[1]]
            self._last[index] = (reply.get("session"), engine, kept)
        return [s for s in samples or [] if "stream" in s[1]]

    def totals(self) -> tuple[dict[str, Any], list[list[Any]]]:
        """The engine counts and the run-wide histogram samples of the whole run."""
        with self._lock:
            return _summed(self._retired + [last[1:] for last in self._last.values()])


def _summed(parts: list[tuple[dict[str, Any], list[list[Any]]]]
            ) -> tuple[dict[str, Any], list[list[Any]]]:
    """(engine counts, histogram samples) added key by key and sample by sample."""
    engine: dict[str, Any] = {}
    samples: dict[tuple[str, tuple], list[Any]] = {}
    for counts, histogram in parts:
        for key, value in counts.items():
            engine[key] = engine.get(key, 0) + value
        for name, labels, value in histogram:
            kept = samples.setdefault((name, tuple(sorted(labels.items()))), [name, labels, 0.0])
            kept[2] += float(value)
    return engine, list(samples.values())


class Supervisor:
    """N worker processes behind one publish and one control endpoint (module docstring).

    ``start()`` returns once every worker serves; a worker whose first start fails with a
    config or model error stops the rest, and ``start()`` raises that error (ConfigError or
    ModelError, as ``Daemon.start`` would). ``wait()``, ``stop()``, ``status()`` and
    ``readiness()`` are the daemon's."""

    def __init__(self, config: DaemonConfig, processes: int, *, stop_signals: StopSignals,
                 exit_when_done: bool = False, log_level: int = logging.WARNING) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if config.publish.replay_endpoint:
            # each worker keeps what it published; one socket answering for all of them is
            # not built yet
            raise ConfigError("publish.replay_endpoint (--replay) is served by a daemon of one "
                              "process: leave it out with engine.processes above 1, or run a "
                              "daemon per shard (--shard K/N), each with its own replay socket")
        self.config = config
        # The fleet's shard this machine serves ("auto": K from the host name); its workers
        # split that shard's streams among themselves (streamtag.daemon.shard.WorkerShard).
        self.shard = config.shard.resolve()
        self.count = processes
        self.exit_when_done = exit_when_done
        # with exit_when_done: (stream, why) of each stream whose source failed, as the
        # workers said when their streams had ended
        self.failed_streams: list[tuple[str, str]] = []
        self.log_level = log_level
        self.stop_signals = stop_signals
        self.session = uuid.uuid4().hex  # this supervisor's; every worker has its own
        self.endpoint: str | None = None  # the publish endpoint, bound
        self.control: ControlServer | None = None
        self.token_file: Path | None = None
        self.metrics: DaemonMetrics | None = None
        # What the metrics look for before a scrape (Observed): set once every worker serves.
        self.engine: Any = None
        self.publisher: Any = None
        self.restarts = 0
        self._workers = [_Worker(i, self._backoff(i)) for i in range(processes)]
        self._totals = _RunTotals()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._all_ready = threading.Event()
        self._fatal: BaseException | None = None
        self._added: dict[str, AddSource] = {}  # add_source requests, replayed on restart
        # add_source's count of running streams: (when asked, count + streams added since)
        self._running: tuple[float, int] | None = None
        self._folder: Path | None = None
        self._worker_token: str | None = None
        self._worker_curve: ClientCurve | None = None  # with keys and [publish] connect
        self._proxy: threading.Thread | None = None
        self._proxy_stop = threading.Event()
        self._proxy_ready = threading.Event()
        self._proxy_error: BaseException | None = None
        self._watcher: threading.Thread | None = None
        self._context: zmq.Context | None = None
        self._auth: Authenticator | None = None
        self._started_at = time.monotonic()
        self._mp = multiprocessing.get_context("spawn")
        self.files_limit: int | None = None  # the open-files limit, once raised at start
        self._caps: dict[str, ConnectionCaps] = {}

    @staticmethod
    def _backoff(index: int) -> Backoff:
        return Backoff(f"worker {index}", reconnect=True, initial_backoff_s=RESTART_INITIAL_S,
                       max_backoff_s=RESTART_MAX_S, max_reconnects=None)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Supervisor:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def connection_caps(self) -> dict[str, ConnectionCaps]:
        """The caps of the public ZeroMQ ports ("publish", "control"), fitted within what the
        open-files limit leaves (streamtag.wire.descriptors; a worker's pipes and sockets
        counted as a source's reserve)."""
        # (replay is refused with --processes: only the feed and control are there)
        wanted, fitted, room = self.config.port_caps(self.files_limit, self.count)
        say_fitted("supervisor", self.files_limit, room,
                   [(f"{key}.endpoint", wanted[key], fitted[key]) for key in wanted])
        return fitted

    def _start(self) -> None:
        cfg = self.config
        # before any socket: every peer costs a descriptor (docs/security.md); the workers
        # inherit the raised limit
        self.files_limit = raise_files_limit("supervisor")
        self._caps = self.connection_caps()
        self._folder = Path(tempfile.mkdtemp(prefix="streamtag-run-"))  # mode 0700
        self._worker_token = ensure_token(self._folder / "workers.token")
        curve = load_keys(cfg.security.server_key, need_secret=True) \
            if cfg.security.server_key is not None else None  # security.curve
        if curve is not None and cfg.publish.connect:
            # The workers publish with the daemon's keys to the peer, so their control sockets
            # are CURVE servers too: this process is their one admin, with a key of its own.
            public, secret = generate_keys(self._folder / "supervisor", "supervisor")
            (self._folder / "admins").mkdir(mode=0o700)
            shutil.copy(public, self._folder / "admins" / "supervisor.key")
            self._worker_curve = ClientCurve(curve.public, load_keys(secret, need_secret=True))
        if cfg.metrics.port:
            from streamtag.daemon.metrics import DaemonMetrics, metrics_error

            try:
                self.metrics = DaemonMetrics(self, cfg.metrics.port, cfg.metrics.address,
                                             merge_histograms=True, limits=cfg.metrics.limits)
            except OSError as exc:
                raise metrics_error(cfg.metrics.address, cfg.metrics.port, exc) from exc
        if cfg.publish.connect:
            self.endpoint = cfg.publish.endpoint
        else:
            self._start_proxy(curve)
        if cfg.control.endpoint:
            self._start_control(curve)
        self._watcher = threading.Thread(target=self._watch, name="streamtag-supervisor",
                                         daemon=True)
        with self._lock:
            for worker in self._workers:
                self._spawn(worker)
        self._watcher.start()
        while not self._all_ready.wait(0.1):
            if self._fatal is not None:
                raise self._fatal
        self.publisher, self.engine = self.endpoint, self._workers

    def _start_proxy(self, curve) -> None:
        cfg = self.config

        def ready(frontend: str | None, backend: str) -> None:
            self.endpoint = backend
            self._proxy_ready.set()

        def serve() -> None:
            try:
                run_proxy(f"ipc://{self._folder}/feed", cfg.publish.endpoint, self._proxy_stop,
                          sndhwm=cfg.publish.sndhwm, ready=ready, curve=curve,
                          client_keys=cfg.security.client_keys,
                          insecure=cfg.security.insecure, caps=self._caps.get("publish"))
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                self._proxy_error = exc
                self._proxy_ready.set()

        self._proxy = threading.Thread(target=serve, name="streamtag-run-proxy", daemon=True)
        self._proxy.start()
        self._proxy_ready.wait()
        if self._proxy_error is not None:
            exc = self._proxy_error
            if isinstance(exc, OSError):
                raise ConfigError(f"publish.endpoint {cfg.publish.endpoint}: "
                                  f"{exc.strerror or exc}; stop the process that holds it, or "
                                  "set another publish.endpoint (--publish)") from exc
            raise exc

    def _start_control(self, curve) -> None:
        cfg = self.config
        self.token_file = Path(cfg.control.token_file or default_token_file()).expanduser()
        ensure_token(self.token_file, pin=cfg.control.pin_token)
        if curve is not None:
            # The workers' sockets are private; only this one needs the admins' keys.
            self._context = zmq.Context()
            self._auth = Authenticator(self._context, {
                CONTROL_DOMAIN: ("security.admin_keys", cfg.security.admin_keys)})
        try:
            self.control = ControlServer(cfg.control.endpoint, handlers_for(self),
                                         context=self._context, curve=curve,
                                         token_file=self.token_file,
                                         caps=self._caps.get("control")).start()
        except OSError as exc:
            raise ConfigError(f"control.endpoint {cfg.control.endpoint}: "
                              f"{exc.strerror or exc}; stop the process that holds it, or set "
                              "another control.endpoint (--control)") from exc

    def worker_config(self, index: int) -> DaemonConfig:
        """What worker ``index`` serves: shard ``index`` of N of the sources, publishing to the
        proxy's ipc socket (or the configured peer), its control socket on ipc with the
        supervisor's token, no metrics port and no keys of its own (nothing of it is reachable
        but through the folder, mode 0700)."""
        cfg, folder = self.config, self._folder
        if folder is None:
            raise RuntimeError("a worker's config is made once start() has made the folder")
        publish = cfg.publish if cfg.publish.connect else dataclasses.replace(
            cfg.publish, endpoint=f"ipc://{folder}/feed", connect=True)
        security = SecurityConfig()
        if cfg.publish.connect and cfg.security.curve:
            security = dataclasses.replace(cfg.security, admin_keys=str(folder / "admins"))
        return dataclasses.replace(
            cfg, shard=self._worker_shard(index), publish=publish,
            control=dataclasses.replace(cfg.control, endpoint=f"ipc://{folder}/control-{index}",
                                        token_file=str(folder / "workers.token"),
                                        pin_token=True),  # made once, by this process
            metrics=MetricsConfig(), security=security, processes=1)

    def _spawn(self, worker: _Worker) -> None:
        """Starts worker's process (with the lock held)."""
        if self._stopping.is_set():
            return
        receive, send = self._mp.Pipe(duplex=False)
        process = self._mp.Process(target=serve_worker, name=f"streamtag-worker-{worker.index}",
                                   args=(self.worker_config(worker.index), send,
                                         self.exit_when_done, self.log_level,
                                         self.stop_signals, str(self._folder),
                                         1 / self.count if self.count > 1 else None),
                                   daemon=True)
        process.start()
        send.close()
        worker.process, worker.conn = process, receive
        worker.state, worker.session, worker.error = "starting", None, None
        worker.served_since = None

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until ``stop()`` has finished (or the timeout); True when stopped."""
        return self._stopped.wait(timeout)

    def stop(self) -> None:
        """Drains every worker (SIGTERM, then each publishes its last windows and its streams'
        final statuses), then closes the endpoints; safe to call twice."""
        with self._lock:
            if self._stopping.is_set():
                first = False
            else:
                first = True
                self._stopping.set()
                processes = [w.process for w in self._workers if w.process is not None]
        if not first:
            if threading.current_thread() is not self._watcher:
                self._stopped.wait()
            return
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + DRAIN_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %d did not drain within %.0f s: killed", process.pid,
                            DRAIN_S)
                process.kill()
                process.join(5)
        if processes and self._proxy is not None:
            time.sleep(PROXY_GRACE_S)
        if self.control is not None:
            self.control.stop()
        if self.metrics is not None:
            self.metrics.close()
        self._proxy_stop.set()
        if self._proxy is not None:
            self._proxy.join(5)
        if self._auth is not None:
            self._auth.stop()
            self._context.term()
        if self._watcher is not None and threading.current_thread() is not self._watcher:
            self._watcher.join(5)
        with self._lock:
            for worker in self._workers:
                if worker.state not in ("done",):
                    worker.state = "stopped"
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._stopped.set()

    # -- watching the workers ------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                waitables: dict[Any, _Worker] = {}
                for worker in self._workers:
                    if worker.conn is not None:
                        waitables[worker.conn] = worker
                    if worker.process is not None and worker.state in ("starting", "running"):
                        waitables[worker.process.sentinel] = worker
            ready = wait_any(list(waitables), WATCH_S) if waitables else []
            if not waitables:
                time.sleep(WATCH_S)
            for thing in ready:  # messages first: a worker says why before it ends
                if isinstance(thing, Connection):
                    self._receive(waitables[thing])
            for thing in ready:
                if not isinstance(thing, Connection) and not self._stopping.is_set():
                    self._exited(waitables[thing])
            self._restart_due()
            if self.exit_when_done and all(w.state == "done" for w in self._workers):
                log.info("every worker's streams have ended")
                self.stop()
                return

    def _receive(self, worker: _Worker, replay: bool = True) -> None:
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            worker.conn.close()
            worker.conn = None
            return
        if kind == "error":
            worker.error = value
            return
        if kind == "failed":  # --exit-when-done: its streams whose source failed
            with self._lock:
                self.failed_streams.extend(tuple(item) for item in value)
            return
        requests: list[AddSource] = []
        with self._lock:
            worker.state, worker.session = "running", value
            worker.served_since = time.monotonic()
            if worker.ever_served and replay:
                requests = [request for sid, request in self._added.items()
                            if self._worker_of(sid) == worker.index]
            worker.ever_served = True
            if all(w.ever_served for w in self._workers):
                self._all_ready.set()
        if worker.restarts:
            log.warning("worker %d serves again (pid %d, restart %d)", worker.index, worker.pid,
                        worker.restarts)
        for request in requests:  # the streams control added to it before it died
            try:
                reply = self._ask(worker, request)
            except TimeoutError as exc:
                reply = {"ok": False, "error": str(exc)}
            if not reply.get("ok"):
                log.warning("worker %d: stream %r could not be added again: %s", worker.index,
                            request.id, reply.get("error"))

    def _exited(self, worker: _Worker) -> None:
        process = worker.process
        process.join(1)
        if process.exitcode is None:
            return
        how = describe_exit(process.exitcode)
        with self._lock:
            while worker.conn is not None and worker.conn.poll():  # what it said last
                self._receive(worker, replay=False)
            if worker.conn is not None:
                worker.conn.close()
                worker.conn = None
            worker.last_exit = how
            if not worker.ever_served:  # its first start failed: restarting will not help
                kind, text = worker.error or ("", f"worker {worker.index} {how} before it "
                                                  "served; run without --processes to see why")
                worker.state = "stopped"
                self._fatal = ModelError(text) if kind == "ModelError" else ConfigError(text)
                return
            if process.exitcode == 0 and self.exit_when_done:
                worker.state = "done"
                return
            if worker.served_since is not None and \
                    time.monotonic() - worker.served_since >= STABLE_S:
                worker.backoff.reset()
            wait_s = worker.backoff.next_wait_s()
            worker.restarts += 1
            self.restarts += 1
            worker.state, worker.session, worker.served_since = "restarting", None, None
            worker.restart_at = time.monotonic() + wait_s
        log.warning("worker %d (pid %d) %s%s; its streams pause; starting it again in %.1f s "
                    "(restart %d)", worker.index, process.pid, how,
                    f" ({worker.error[1]})" if worker.error else "", wait_s, worker.restarts)

    def _restart_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for worker in self._workers:
                if worker.state == "restarting" and now >= worker.restart_at:
                    self._spawn(worker)

    # -- status and control --------------------------------------------------------------------

    def _ask(self, worker: _Worker, request: ControlRequest,
             timeout_ms: int = ASK_TIMEOUT_MS) -> dict[str, Any]:
        """A control request to ``worker``, with the workers' token; TimeoutError naming it."""
        try:
            return ControlClient(f"ipc://{self._folder}/control-{worker.index}",
                                 token=self._worker_token, curve=self._worker_curve,
                                 attempt_ms=timeout_ms).ask(request)
        except TimeoutError:
            raise TimeoutError(f"worker {worker.index} did not answer within {timeout_ms} ms "
                               f"(state {worker.state})") from None

    def _serving(self) -> list[_Worker]:
        with self._lock:
            return [w for w in self._workers if w.state == "running"]

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._described(w) for w in self._workers]

    @staticmethod
    def _described(w: _Worker) -> dict[str, Any]:
        return {"index": w.index, "pid": w.pid, "state": w.state, "session": w.session,
                "restarts": w.restarts, "last_exit": w.last_exit}

    def status(self, histograms: bool = False) -> dict[str, Any]:
        """The workers' ``status`` replies merged: every stream (with the worker serving it),
        the engines' counts summed, and each worker's process, state and restarts; with
        ``histograms`` (the metrics port's scrape) also ``histograms``, each answering
        worker's ``Histograms.samples``."""
        workers = self.workers()
        streams: dict[str, Any] = {}
        engine: dict[str, float] = {"batches": 0, "failed_batches": 0}
        model, dropped = None, 0
        samples: list[list[Any]] = []
        serving = {w.index: w for w in self._serving()}
        for info in workers:
            worker = serving.get(info["index"])
            if worker is None:
                continue
            try:
                reply = self._ask(worker, Status(histograms))
            except TimeoutError:
                info["state"] = "not answering"
                continue
            if not reply.get("ok"):
                continue
            if reply.get("session") != info["session"]:
                # it died and its next process answered the request meanwhile: describe that one
                with self._lock:
                    info.update(self._described(worker))
            per_stream = self._totals.seen(info["index"], reply)
            if histograms:
                samples.append(per_stream)
            info["streams"] = len(reply.get("streams", {}))
            # each worker measured its own batch size as its model loaded
            info["max_batch"] = (reply.get("model") or {}).get("max_batch")
            for sid, stream in reply.get("streams", {}).items():
                streams[sid] = {**stream, "worker": info["index"]}
            model = model or reply.get("model")
            dropped += reply.get("dropped_messages", 0)
        counted, run_wide = self._totals.totals()  # every worker's, earlier sessions' too
        engine.update(counted)
        if histograms:
            samples.append(run_wide)
        merged = {"session": self.session,
                  "shard": {"index": self.shard.index, "count": self.shard.count},
                  "processes": self.count,
                  "uptime_s": time.monotonic() - self._started_at, "model": model,
                  "streams": streams, "engine": engine, "dropped_messages": dropped,
                  "workers": workers, "restarts": self.restarts}
        return {**merged, "histograms": samples} if histograms else merged

    def _running_streams(self, fresh: bool) -> int:
        """The streams running on the workers, for ``control.max_sources``: counted on their
        ``status`` replies when ``fresh`` or when the last count is RUNNING_COUNT_S old, else
        that count plus the streams added since. Never fewer than run (streams are added only
        here; those that ended since are still counted), so an add under the limit is right,
        and add_source refuses only on a fresh count. Asking every worker's full status on
        each add took ~22 ms an add with 8 workers and 256 streams (an H200 box's 16 cores):
        adding the streams of a short run took as long as serving them."""
        with self._lock:
            counted = self._running
        if not fresh and counted is not None \
                and time.monotonic() - counted[0] < RUNNING_COUNT_S:
            return counted[1]
        asked = time.monotonic()
        status = self.status()
        streams = status["streams"]
        running = sum(1 for s in streams.values() if s.get("state") not in FINAL_STATES)
        answered = {w["index"] for w in status["workers"] if "streams" in w}
        with self._lock:  # streams that ended on a serving worker are not added again
            for old in [old for old in self._added if self._worker_of(old) in answered
                        and streams.get(old, {}).get("state", "ended") in FINAL_STATES]:
                del self._added[old]
            self._running = (asked, running)
        return running

    def readiness(self) -> tuple[bool, str]:
        if self._stopping.is_set():
            return False, "draining: stopping, the workers publish their last windows"
        if not self._all_ready.is_set():
            return False, "starting the worker processes"
        serving = self._serving()
        if not serving:
            return False, "no worker process serves: every one is being started again"
        reason = f"ready: {len(serving)} of {self.count} worker processes serve"
        missing = sorted(set(range(self.count)) - {w.index for w in serving})
        if missing:
            reason += f" (worker {', '.join(map(str, missing))} starting again)"
        return True, reason

    def _worker_shard(self, index: int) -> WorkerShard:
        """Worker ``index``'s part of the sources: shard ``index`` of N, or with ``--shard
        K/M`` its part of shard K (a second hash, independent of the fleet's)."""
        return WorkerShard(index, self.count, within=self.shard)

    def _worker_of(self, stream_id: str) -> int:
        """The index of the worker that serves ``stream_id``, of this machine's shard."""
        return self._worker_shard(0).owner(stream_id)

    def owner(self, stream_id: str) -> _Worker:
        """The worker that serves ``stream_id`` (its shard), when it serves now; ConfigError
        for a stream of another machine's shard, or while the worker is being started
        again."""
        self.shard.check_owns(stream_id, "machine")
        worker = self._workers[self._worker_of(stream_id)]
        if worker.state != "running":
            raise ConfigError(f"stream {stream_id!r} belongs to worker {worker.index}, which is "
                              f"{worker.state} (restarts: {worker.restarts}); try again in a "
                              "few seconds")
        return worker

    # -- control requests (streamtag.wire.requests.ControlHandler) ----------------------------
    # A worker's reply is returned as it is: the control server puts {"ok": true} first and
    # the reply's own "ok" (and "error") over it, so a refusal reaches the client in the
    # worker's own words.

    def handle_status(self, request: Status) -> Reply:
        return self.status()

    def handle_snapshot(self, request: Snapshot) -> Reply:
        # Each stream says the session of the worker serving it (its live messages come under
        # that one), and `sessions` lists them all: a dashboard that took this snapshot then
        # knows every worker's heartbeats, and resets no stream when its live messages arrive.
        streams: dict[str, Any] = {}
        merged: dict[str, Any] = {"session": None, "model": None}
        sessions: list[str] = []
        for worker in self._serving():
            reply = self._ask(worker, request)
            if reply.get("ok"):
                session = reply.get("session")
                if isinstance(session, str):
                    sessions.append(session)
                for sid, view in (reply.get("streams") or {}).items():
                    streams[sid] = {**view, "session": session}
                merged["session"] = merged["session"] or session
                merged["model"] = merged["model"] or reply.get("model")
        return {**merged, "sessions": sessions, "streams": streams}

    def handle_add_source(self, request: AddSource) -> Reply:
        sid = request.id
        worker = self.owner(sid)
        running = self._running_streams(fresh=False)
        if running >= self.config.control.max_sources:  # refused only on a fresh count
            self.config.control.check_room(sid, self._running_streams(fresh=True))
        reply = self._ask(worker, request)
        if reply.get("ok"):
            with self._lock:
                self._added[sid] = request
                if self._running is not None:
                    self._running = (self._running[0], self._running[1] + 1)
        return reply

    def handle_remove_source(self, request: RemoveSource) -> Reply:
        sid = request.id
        reply = self._ask(self.owner(sid), request)
        if reply.get("ok"):
            with self._lock:
                self._added.pop(sid, None)
        elif str(reply.get("error", "")).startswith(UNKNOWN_STREAM):
            # the worker names its own streams: name every worker's
            return {**reply, "error": unknown_stream(sid, self.status()["streams"])}
        return reply

    def handle_reload_model(self, request: ReloadModel) -> Reply:
        serving = self._serving()
        if len(serving) < self.count:
            raise ConfigError("reload_model needs every worker serving (one is being started "
                              "again); try again in a few seconds")
        first: dict[str, Any] = {}
        for worker in serving:
            reply = self._ask(worker, request, timeout_ms=60_000)  # a model loads
            if not reply.get("ok"):
                return {**reply, "error": f"worker {worker.index}: {reply.get('error')}"}
            first = first or reply
        model = (first.get("model") or {}).get("path")
        if model:  # a worker started again loads what the others serve
            with self._lock:
                self.config = dataclasses.replace(
                    self.config, model=dataclasses.replace(self.config.model, path=model))
        return first
