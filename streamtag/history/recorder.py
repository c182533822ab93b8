"""The recorder behind ``streamtag record``: subscribe to daemons (or a proxy) and write what
they publish to the history database, losing nothing silently.

Three threads and a queue bounded in messages and bytes: the receiver decodes messages (a
`Subscriber`, which judges seq gaps and daemon restarts) and puts them in the queue; the one
writer takes whatever has queued, up to a batch, and writes it in one transaction; at start a
snapshot thread asks each daemon's control socket for its current tag states. When the database
is down the writer keeps its batch and retries with back-off while the queue fills; a message
that finds the queue full is dropped, counted, and stored as an "overflow" gap once the
database is back. A restarted recorder resumes the seq judgement from the database, so what was
published while it was down is stored as a gap too, unless the daemon's replay socket still
holds it (``replay``): then it is asked for and stored, as is what a gap in the feed lacked.
Every message row is unique on (stream,
session, seq) and inserted with ON CONFLICT DO NOTHING, so a batch retried after a commit whose
outcome was unknown is stored once. A message that cannot be stored (the database refuses its
row, or writing it fails in any other way) is counted, logged once per kind of failure, and
stored as a gap of one message; the writer goes on with the rest. What the recorder remembers
per stream, session and model is bounded, whatever peers send.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import shlex
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import zmq
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from streamtag import values
from streamtag.backoff import Backoff
from streamtag.errors import ConfigError, ProtocolError
from streamtag.history import blocks, bulk, partitions, rows, schema
from streamtag.history.retention import DEFAULT_EVERY_S, Retention, expire, kept_by_table
from streamtag.wire.control import ControlClient
from streamtag.wire.protocol import (
    HEARTBEAT,
    MAX_BODY_BYTES,
    MAX_ID_LENGTH,
    MAX_INTEGER,
    MSG_TYPES,
    STREAM_MSG_TYPES,
    EventBody,
    HeartbeatBody,
    ModelRef,
    ScoresBody,
    SilenceBody,
    StatusBody,
    TrackBody,
    topic_for,
    validate_stream_id,
)
from streamtag.wire.security import ClientCurve
from streamtag.wire.sockets import batch_context
from streamtag.wire.subscriber import DEFAULT_QUEUE_BYTES as SUBSCRIBER_QUEUE_BYTES
from streamtag.wire.subscriber import ReceivedMessage, Subscriber

DEFAULT_QUEUE_SIZE = 100_000   # messages: 64 streams' scores for about 25 minutes
# ... and their bytes on the wire: 43,000 honest messages of 3 kB (a 56-tag model's scores),
# but only 128 forged ones of the 1 MiB a scores frame may hold. The subscriber's own queue in
# front of it is bounded too (wire.subscriber.DEFAULT_QUEUE_BYTES).
DEFAULT_QUEUE_BYTES = 128 * 1024 * 1024
# A status's counters as stored: a daemon reports a dozen (about 300 characters); past this
# the rest are left out, the cut said once in the log.
MAX_STORED_COUNTERS_CHARS = 16 * 1024
DEFAULT_BATCH_SIZE = 2000      # messages per transaction at most
GATHER_S = 0.1                 # the writer waits this long for a batch to fill
DUE_EVERY_S = 0.05             # how often the writer looks for blocks due
RECEIVE_CHUNK = 512            # messages the receiver hands over to the writer at a time
# What ZeroMQ may hold for the recorder per endpoint, ahead of the subscriber's own queue:
# more messages than a reader's default (SOCKET_RCVHWM, 8), of frames no larger than the
# largest a message may have (a 1 MiB body; a reader's default is 4 MiB). Each time ZeroMQ has
# filled what it may hold the receiver sleeps and wakes, and its I/O thread with it, sharing
# one core: at 8 a time that cost the recorder about a tenth of its throughput. At most
# 32 x 3 frames x 1 MiB is held, the same 96 MiB as a reader's 8 x 3 x 4 MiB; a larger frame
# is never read (ZeroMQ drops the connection, and the subscriber connects again: a gap).
FEED_SOCKET_RCVHWM = 32
FEED_MAX_FRAME_BYTES = max(MAX_BODY_BYTES.values())
DEFAULT_MAX_BACKOFF_S = 30.0
FIRST_BACKOFF_S = 0.25
SNAPSHOT_TIMEOUT_MS = 2000
_RECV_SLICE_MS = 200
# A database that is down or unreachable: worth retrying, unlike one that refuses a row.
RETRYABLE_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)
# SQLite's words for a table or column the code writes that the database lacks (one whose
# schema is not what its revision says): no retry mends that
_SQLITE_SCHEMA_MISMATCH = re.compile(r"no such (table|column)|has no column named")
_MSG_TYPE_OF_TABLE = {t.name: msg_type for msg_type, t in schema.MESSAGE_TABLES.items()}
_BLOCKS = frozenset((schema.window_blocks.name, schema.window_rollups.name))
# What the recorder remembers, bounded against forged sessions and models (the least recently
# added forgotten first; forgetting costs a database look-up, never a row).
MAX_REMEMBERED_SESSIONS = 65536    # (stream, session) pairs stored, and each stream's newest
MAX_REMEMBERED_MODELS = 256
MAX_REMEMBERED_MODEL_CHARS = 16 * 1024 * 1024  # their names and tag names together
MAX_FAILURE_KINDS_LOGGED = 100
MAX_REMEMBERED_NAMES_CHARS = 16 * 1024 * 1024  # active tags and mood words as stored
# A replay request may wait this long: a gap asked for late is still stored whole, while one
# not answered is stored as a gap (and the replay socket left alone for a few seconds).
REPLAY_TIMEOUT_MS = 5000
# Runs of messages dropped at a full queue kept to be stored as gaps: one per (stream,
# session, type) with a break in its seqs. Past this (forged sessions while the database is
# down) the dropped messages are only counted.
MAX_OVERFLOW_RUNS = 65536
# Gap causes of messages that reached the recorder but could not be stored.
REJECTED = "rejected"  # the database refused the row
FAILED = "failed"      # anything else went wrong in writing it

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    """What the recorder has done; read by the metrics collector at scrape time."""

    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MSG_TYPES, 0))
    written: int = 0            # messages committed to the database
    overflowed: int = 0         # messages dropped because the queue was full
    gaps: int = 0               # gap rows stored (seq jumps and overflow runs)
    missed: int = 0             # messages those gaps say are missing
    restarts: int = 0           # daemon restarts seen (a stream under a new session)
    db_errors: int = 0          # failed transactions (each retried)
    rejected: int = 0           # messages the database refused outright (stored as gaps)
    failed: int = 0             # messages that failed otherwise in writing (stored as gaps)
    snapshots: int = 0          # control snapshots stored
    invalid: int = 0            # frames that did not decode
    db_up: bool = False


@dataclass(frozen=True)
class Snapshot:
    control: str
    reply: dict[str, Any]
    taken_at: float


@dataclass
class _Batch:
    """Rows of one transaction, built once: a retry writes the same rows."""

    messages: int = 0
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    models: dict[tuple[str, str, str], None] = field(default_factory=dict)  # keys to resolve
    daemons: dict[str, dict[str, Any]] = field(default_factory=dict)  # session -> latest
    alone: bool = False  # refused as a whole: written a row at a time, what is done removed
    failed: int = 0      # its messages that could not be stored

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)


class WriteQueue:
    """What waits for the writer: messages (and snapshots), at most ``maxsize`` of them and
    ``most_bytes`` of the messages' bytes on the wire. The receiver hands over a chunk of
    messages at a time (`offer`), the writer takes a batch at a time (`take`)."""

    def __init__(self, maxsize: int, most_bytes: int) -> None:
        self.maxsize, self.most_bytes = maxsize, most_bytes
        self.bytes = 0  # the wire bytes of the messages waiting
        self._items: deque[Any] = deque()
        self._ready = threading.Condition(threading.Lock())

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def offer(self, messages: Iterable[ReceivedMessage]) -> list[ReceivedMessage]:
        """Queues each message that fits, in order; returns those that do not."""
        refused = []
        items = self._items
        with self._ready:
            for message in messages:
                if len(items) < self.maxsize and self.bytes + message.size <= self.most_bytes:
                    items.append(message)
                    self.bytes += message.size
                else:
                    refused.append(message)
            self._ready.notify()
        return refused

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queues one item, waiting (up to ``timeout``) while it does not fit: queue.Full
        then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._put(item):
            left = None if deadline is None else deadline - time.monotonic()
            if not block or (left is not None and left <= 0):
                raise queue.Full
            time.sleep(0.01 if left is None else min(0.01, left))

    def _put(self, item: Any) -> bool:
        size = item.size if isinstance(item, ReceivedMessage) else 0
        with self._ready:
            if len(self._items) >= self.maxsize or self.bytes + size > self.most_bytes:
                return False
            self._items.append(item)
            self.bytes += size
            self._ready.notify()
        return True

    def take(self, most: int, timeout: float) -> list[Any]:
        """Up to ``most`` items, waiting up to ``timeout`` for the first."""
        items = self._items
        with self._ready:
            if not items and not self._ready.wait_for(lambda: items, timeout):
                return []
            taken = [items.popleft() for _ in range(min(most, len(items)))]
            self.bytes -= sum(item.size for item in taken if isinstance(item, ReceivedMessage))
        return taken


class _Recent(OrderedDict):
    """A dict of at most ``most`` entries whose keys weigh at most ``most_weight`` together;
    the least recently added are forgotten first."""

    def __init__(self, most: int, most_weight: float = math.inf,
                 weigh: Callable[[Any], int] = lambda key: 0) -> None:
        super().__init__()
        self.most, self.most_weight, self.weigh, self.weight = most, most_weight, weigh, 0

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self:
            self.weight += self.weigh(key)
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.most or (self.weight > self.most_weight and len(self) > 1):
            old, _ = self.popitem(last=False)
            self.weight -= self.weigh(old)


def _model_weight(key: tuple) -> int:
    name, hash_, tags = key
    return len(name) + len(hash_) + (len(tags) if isinstance(tags, str)
                                     else sum(map(len, tags)))


class Recorder:
    """Records the messages of `connect` endpoints into `engine`'s database.

    control: daemons' control endpoints, asked for a snapshot at start.
    queue_size, queue_bytes: messages, and their bytes on the wire, that may wait for the
        database; more are dropped and counted (and stored as gaps).
    curve: this client's CURVE keys and the server's, for a daemon (or proxy) with keys.
    owns: which streams to record, by stream id (None: all): a recorder of one shard of a
        fleet (``record --shard K/N``), beside the recorders of the other shards writing the
        same database. What it resumes from the database, and its snapshot rows, are of
        these streams only; the others' messages are skipped unread.
    heartbeats: whether to record the daemons' heartbeats (the `daemons` table and their
        gaps): one recorder of a shard set does (shard 0), so each is stored once.
    retention: what expires and when (history.retention); None keeps everything.
    max_block_age_s: the longest a window waits in its stream's block before it is written
        (a crash loses at most that much of each stream, stored as a gap when it restarts).
    replay: the daemons' replay sockets (streamtag.wire.replay): a seq gap, and what was
        published while the recorder was stopped (from the last seq the database holds), are
        asked for there and stored as the messages they are; only what the daemon's ring no
        longer holds is stored as a gap.
    """

    def __init__(self, engine: Engine, connect: str | Sequence[str],
                 control: Iterable[str] = (), *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 max_backoff_s: float = DEFAULT_MAX_BACKOFF_S, rcvhwm: int = 100_000,
                 context: zmq.Context | None = None, curve: ClientCurve | None = None,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES,
                 max_block_age_s: float = blocks.MAX_BLOCK_AGE_S,
                 retention: Retention | None = None,
                 retention_every_s: float = DEFAULT_EVERY_S,
                 owns: Callable[[str], bool] | None = None, heartbeats: bool = True,
                 replay: Iterable[str] = ()):
        if (queue_size < 1 or batch_size < 1 or max_backoff_s <= 0 or queue_bytes < 1
                or not 0 < max_block_age_s <= blocks.BLOCK_S):
            raise ValueError("queue_size, queue_bytes and batch_size must be >= 1, "
                             "max_backoff_s > 0 and max_block_age_s in (0, 60]")
        self.engine = engine
        self.endpoints = [connect] if isinstance(connect, str) else list(connect)
        self.control = list(control)
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.stats = RecorderStats()
        self.queue = WriteQueue(queue_size, queue_bytes)
        self.queue_bytes = queue_bytes
        self._counters_cut = False  # said once
        self._rcvhwm = rcvhwm
        self._context = context
        self._own_context: zmq.Context | None = None  # the feed's: made by connect, ended by stop
        self._curve = curve
        self._dialect = engine.dialect.name
        self._owns = owns
        self._heartbeats = heartbeats
        self.replay = list(replay)
        self._models: _Recent = _Recent(MAX_REMEMBERED_MODELS, MAX_REMEMBERED_MODEL_CHARS,
                                        _model_weight)  # packed key -> id
        # (name, hash, tags) as received -> its checked, packed key: once per model, not per
        # message (every scores message carries the model and its tag list)
        self._model_keys: _Recent = _Recent(MAX_REMEMBERED_MODELS, MAX_REMEMBERED_MODEL_CHARS,
                                            _model_weight)
        self._last_model: tuple[Any, Any, Any] = (None, None, None)  # model, tags, its key
        self._packed_names: dict[tuple[str, ...], str] = {}  # names -> rows.names(names)
        self._packed_chars = 0
        # stream -> its newest session; (stream, session) pairs stored
        self._latest_session: _Recent = _Recent(MAX_REMEMBERED_SESSIONS)
        self._known: _Recent = _Recent(MAX_REMEMBERED_SESSIONS)
        # each stream's windows of the minute under way, written as a block when due
        self._blocks = blocks.OpenBlocks(MAX_REMEMBERED_SESSIONS, max_block_age_s)
        self.retention, self.retention_every_s = retention, retention_every_s
        self._session_ids: _Recent = _Recent(MAX_REMEMBERED_SESSIONS)  # (stream, session)
        self._failures_logged: set[tuple[str, str]] = set()  # (cause, kind) logged once
        self._overflow: dict[tuple[str, str, str], list[int]] = {}  # key -> [first, last]
        self._overflow_done: list[tuple[tuple[str, str, str], int, int, str]] = []
        self._restarts_dropped: set[tuple[str, str]] = set()  # first messages of a restart
        self._overflow_lock = threading.Lock()
        self._overflow_capped = False  # said once per outage
        self._stop_receiving = threading.Event()
        self._received_all = threading.Event()  # the receiver has queued its last chunk
        self._abandon = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscriber: Subscriber | None = None

    # -- life

    def connect(self) -> Recorder:
        """Subscribe now: what the daemons publish waits (``hold`` reads it, up to the queue's
        bounds; beyond them, seen later as a gap) until ``start``, as while the database is
        still down."""
        if self._subscriber is None:
            # what waits before `start` waits in the subscriber, bounded as the queue is
            topics = MSG_TYPES if self._heartbeats else STREAM_MSG_TYPES
            context = self._context
            if context is None:  # the feed's own, its I/O thread out of the decoder's way
                context = self._own_context = batch_context()
            try:
                self._subscriber = Subscriber(self.endpoints, topics=topics, context=context,
                                              rcvhwm=self._rcvhwm, curve=self._curve,
                                              max_queue_bytes=self.queue_bytes,
                                              owns=self._owns,
                                              socket_rcvhwm=FEED_SOCKET_RCVHWM,
                                              max_frame_bytes=FEED_MAX_FRAME_BYTES,
                                              replay=self.replay or None,
                                              replay_timeout_ms=REPLAY_TIMEOUT_MS)
            except BaseException:
                self._end_own_context()
                raise
        return self

    def hold(self) -> None:
        """Before ``start``: keeps reading what the daemons publish (undecoded, within the
        queue's bounds), so that it waits here rather than being dropped by the publishers."""
        if self._subscriber is not None and not self._threads:
            self._subscriber.read_ahead()

    def start(self) -> Recorder:
        """Resume from the database (it must be reachable and upgraded) and start recording
        (subscribing, unless ``connect`` did already)."""
        last_seq, sessions, restarted = self._resume_state()
        self.connect()
        self._subscriber.resume(last_seq, sessions, restarted)
        # from now on the queue holds what waits; the subscriber only reads ahead of it
        self._subscriber.max_queue_bytes = min(self.queue_bytes, SUBSCRIBER_QUEUE_BYTES)
        self._threads = [threading.Thread(target=self._receive, name="streamtag-record-recv",
                                          daemon=True),
                         threading.Thread(target=self._write_loop,
                                          name="streamtag-record-writer", daemon=True)]
        if self.control:
            self._threads.append(threading.Thread(target=self._snapshots, daemon=True,
                                                  name="streamtag-record-snapshot"))
        if self.retention is not None or partitions.partitioned(self.engine):
            self._threads.append(threading.Thread(target=self._expire, daemon=True,
                                                  name="streamtag-record-retention"))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, drain_timeout_s: float = 10.0) -> bool:
        """Stop receiving and write what is queued; gives up after `drain_timeout_s` (the
        database is down) and returns whether everything queued was written."""
        self._stop_receiving.set()
        writer = self._threads[1] if len(self._threads) > 1 else None
        if writer is not None:
            writer.join(drain_timeout_s)
            if writer.is_alive():
                self._abandon.set()
                writer.join(5.0)
        for thread in self._threads:
            thread.join(1.0)
        if self._subscriber is not None:
            self._subscriber.close()
        self._end_own_context()
        return self.queue.empty() and (writer is None or not writer.is_alive())

    def _end_own_context(self) -> None:
        if self._own_context is not None:
            self._own_context.term()
            self._own_context = None

    @property
    def open_blocks(self) -> int:
        """Streams whose windows wait in a block not yet written."""
        return len(self._blocks.open)

    # -- resuming

    def _resume_state(self):
        """What the database says was seen: the last seq per (session, topic) of each
        stream's newest session, the sessions per stream, and sessions seen starting."""
        s = schema
        last_seq: dict[tuple[str, str], int] = {}
        sessions: dict[str, set[str]] = {}
        restarted: set[str] = set()
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(s.sessions.c.stream, s.sessions.c.session,
                                              s.sessions.c.restarted)
                                    .order_by(s.sessions.c.first_sent_at, s.sessions.c.id)):
                if self._owns is not None and not self._owns(row.stream):
                    continue  # another shard's recorder resumes it
                sessions.setdefault(row.stream, set()).add(row.session)
                self._known[(row.stream, row.session)] = None
                self._latest_session[row.stream] = row.session
                if row.restarted:
                    restarted.add(row.session)
            wb, ses = s.window_blocks.c, s.sessions.c
            for stream, session in self._latest_session.items():
                for msg_type, table in [*s.MESSAGE_TABLES.items(), ("scores", None)]:
                    if table is None:  # the windows: their blocks' last seqs
                        top = conn.execute(sa.select(sa.func.max(wb.last_seq)).join_from(
                            s.window_blocks, s.sessions, wb.session_id == ses.id).where(
                            ses.stream == stream, ses.session == session)).scalar()
                    else:
                        top = conn.execute(sa.select(sa.func.max(table.c.seq)).where(
                            table.c.stream == stream, table.c.session == session)).scalar()
                    gap_top = conn.execute(sa.select(
                        sa.func.max(s.gaps.c.first_seq + s.gaps.c.missed - 1)).where(
                        s.gaps.c.stream == stream, s.gaps.c.session == session,
                        s.gaps.c.msg_type == msg_type)).scalar()
                    seen = [v for v in (top, gap_top) if v is not None]
                    if seen:
                        last_seq[(session, topic_for(msg_type, stream))] = int(max(seen))
            for row in (conn.execute(sa.select(s.daemons.c.session, s.daemons.c.last_seq))
                        if self._heartbeats else ()):
                last_seq[(row.session, HEARTBEAT)] = int(row.last_seq)
        self.stats.db_up = True  # it answered; an idle feed is no reason to report it down
        return last_seq, sessions, restarted

    # -- receiving

    def _receive(self) -> None:
        subscriber = self._subscriber
        assert subscriber is not None
        received = self.stats.received
        try:
            while not self._stop_receiving.is_set():
                try:
                    # what has arrived, a chunk at a time: one hand-over to the writer per chunk
                    messages = subscriber.recv_many(RECEIVE_CHUNK, _RECV_SLICE_MS)
                except Exception as exc:  # noqa: BLE001 - the receiver must outlive any message
                    self._log_failure(FAILED, exc, "receiving a message")
                    self.stats.failed += 1
                    self._stop_receiving.wait(_RECV_SLICE_MS / 1e3)
                    continue
                self.stats.invalid = subscriber.invalid
                for message in self.queue.offer(messages):  # what does not fit: a gap
                    self._count_overflow(message)
                # counted once queued or dropped: a message counted is the writer's to store
                for message in messages:
                    received[message.msg_type] = received.get(message.msg_type, 0) + 1
        finally:
            # the writer ends once this is set and the queue is empty: not before the last
            # chunk received is in the queue
            self._received_all.set()

    def _count_overflow(self, message: ReceivedMessage) -> None:
        key = (message.stream, message.session, message.msg_type)
        with self._overflow_lock:
            self.stats.overflowed += 1
            run = self._overflow.get(key)
            if run is not None and run[1] + 1 == message.seq:
                run[1] = message.seq
                return
            if len(self._overflow) + len(self._overflow_done) >= MAX_OVERFLOW_RUNS:
                if not self._overflow_capped:
                    self._overflow_capped = True
                    log.warning("over %d runs of messages dropped at the full queue wait to "
                                "be stored as gaps; further ones are only counted in "
                                "streamtag_record_queue_overflow_messages_total",
                                MAX_OVERFLOW_RUNS)
                return
            if run is not None:
                self._overflow_done.append((key, run[0], run[1], "overflow"))
            self._overflow[key] = [message.seq, message.seq]
            # what it told of loss before it is kept: the seq gap it ended, the restart it began
            if message.gap:
                self._overflow_done.append((key, message.seq - message.gap, message.seq - 1,
                                            "seq"))
            if message.restarted and len(self._restarts_dropped) < MAX_OVERFLOW_RUNS:
                self._restarts_dropped.add((message.stream, message.session))

    def _take_overflow(self) -> list[tuple[tuple[str, str, str], int, int, str]]:
        with self._overflow_lock:
            runs = self._overflow_done + [(k, r[0], r[1], "overflow")
                                          for k, r in self._overflow.items()]
            self._overflow_done = []
            self._overflow = {}
            self._overflow_capped = False
        return runs

    def _snapshots(self) -> None:
        for endpoint in self.control:
            backoff = _backoff(self.max_backoff_s)
            while not self._stop_receiving.is_set():
                try:
                    reply = ControlClient(endpoint, context=self._context, curve=self._curve,
                                          attempt_ms=SNAPSHOT_TIMEOUT_MS).snapshot()
                except (TimeoutError, OSError, ValueError) as exc:
                    wait_s = backoff.next_wait_s()
                    log.info("no snapshot from %s yet (%s); retrying in %.1f s", endpoint, exc,
                             wait_s)
                    self._stop_receiving.wait(wait_s)
                    continue
                if not reply.get("ok"):
                    log.warning("%s refused the snapshot: %s", endpoint, reply.get("error"))
                    break
                item = Snapshot(endpoint, reply, time.time())
                while not self._stop_receiving.is_set():
                    try:
                        self.queue.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                break

    def _expire(self) -> None:
        """Makes the partitions of the days ahead (PostgreSQL) and deletes what its retention
        says is old, at start and every retention_every_s."""
        while not self._stop_receiving.is_set():
            try:
                now = time.time()
                partitions.ensure(self.engine, now, None if self.retention is None
                                  else kept_by_table(self.retention))
                deleted = {} if self.retention is None else expire(
                    self.engine, self.retention, now, self._stop_receiving)
                if any(deleted.values()):
                    log.info("retention: deleted %s", ", ".join(
                        f"{n} {name} rows" for name, n in deleted.items() if n))
            except sa.exc.DBAPIError as exc:  # down: the writer says so; next time, then
                log.debug("retention could not run (%s)", str(exc.orig).strip()[:200])
            self._stop_receiving.wait(self.retention_every_s)

    # -- writing

    def _write_loop(self) -> None:
        batch: _Batch | None = None
        backoff = _backoff(self.max_backoff_s)
        outage_since: float | None = None
        outage_cause: str | None = None  # permanent_db_error's words, while they apply
        due_checked = -math.inf
        while not self._abandon.is_set():
            if batch is None:
                items = self._take()
                runs = self._take_overflow()
                ending = not items and self._received_all.is_set() and self.queue.empty()
                batch = self._rows(items, runs)
                # the blocks due (looked for every DUE_EVERY_S, not at every batch), and on
                # stop every block under way
                now = time.monotonic()
                if ending:
                    closed = self._blocks.close_all()
                elif now - due_checked >= DUE_EVERY_S:
                    closed, due_checked = self._blocks.due(now), now
                else:
                    closed = []
                for block in closed:
                    self._block_rows(batch, block)
                if not batch.rows and not batch.daemons:
                    batch = None
                    if ending:
                        return
                    continue
            try:
                if batch.alone:
                    self._write_rows_alone(batch)
                else:
                    self._write(batch)
            except RETRYABLE_DB_ERRORS as exc:
                self.stats.db_errors += 1
                self.stats.db_up = False
                # A login refused in mid-run (a password changed under it) will not pass by
                # itself: said as an error with the fix, once per change of cause. Retrying
                # goes on, so that nothing queued is lost once the login is mended.
                permanent = permanent_db_error(exc, self.engine)
                if outage_since is None or permanent != outage_cause:
                    outage_since = outage_since or time.monotonic()
                    outage_cause = permanent
                    if permanent is None:
                        log.warning("the database is unavailable (%s); retrying with back-off, "
                                    "messages wait in the queue", str(exc.orig).strip()[:200])
                    else:
                        log.error("%s; retrying with back-off until it is mended, messages "
                                  "wait in the queue", permanent)
                self._abandon.wait(backoff.next_wait_s())
                continue
            except Exception as exc:  # noqa: BLE001 - refused, or a row that cannot be written
                if batch.alone:  # a row at a time failed as a whole: the last resort
                    self._log_failure(FAILED, exc, "a batch written a row at a time")
                    self.stats.failed += batch.messages - batch.failed
                    batch = None
                    continue
                # A row at a time finds the messages at fault; the others are written.
                log.debug("a batch failed (%s: %s); writing it row by row",
                          type(exc).__name__, exc)
                batch.alone = True
                continue
            if outage_since is not None:
                log.warning("the database is back after %.1f s",
                            time.monotonic() - outage_since)
                outage_since, outage_cause = None, None
            self.stats.db_up = True
            self.stats.written += batch.messages - batch.failed
            backoff.reset()
            batch = None

    def _take(self) -> list[Any]:
        items = self.queue.take(self.batch_size, _RECV_SLICE_MS / 1e3)
        if items and len(items) < self.batch_size and not self._stop_receiving.is_set():
            # less than a batch: what follows within GATHER_S goes in the same transaction
            # (a transaction costs more than many rows in it)
            self._stop_receiving.wait(GATHER_S)
            items += self.queue.take(self.batch_size - len(items), 0)
        return items

    def _stored_counters(self, stream: str, counters: dict[str, int | float] | None) -> str:
        """A status's counters as JSON, within MAX_STORED_COUNTERS_CHARS (the first by name)."""
        stored, kept = rows.stored_counters(counters, MAX_STORED_COUNTERS_CHARS)
        if kept < len(counters or {}) and not self._counters_cut:
            self._counters_cut = True
            log.warning("a status of stream %s carried %d characters of counters; %d of its "
                        "%d counters were stored (at most %d characters are; further cuts "
                        "are not logged)", stream, len(json.dumps(counters, ensure_ascii=False)),
                        kept, len(counters or {}), MAX_STORED_COUNTERS_CHARS)
        return stored

    def _rows(self, items: list[Any], runs) -> _Batch:
        batch = _Batch()
        now = time.time()
        for item in items:
            if isinstance(item, Snapshot):
                try:
                    self._snapshot_rows(batch, item)
                except Exception as exc:  # noqa: BLE001 - a reply from outside
                    self._log_failure(FAILED, exc, f"a snapshot from {item.control}")
                continue
            try:
                # adds the message's own row last: a failure leaves none of it
                stored = self._message_rows(batch, item, now)
            except Exception as exc:  # noqa: BLE001 - one message must not stop the writer
                self._message_failed(batch, item.msg_type, item.stream, item.session,
                                     item.seq, FAILED, exc, now)
                continue
            batch.messages += stored  # a window counts when its block is written
        for (stream, session, msg_type), first, last, cause in runs:
            self._gap(batch, stream, session, msg_type, first, last - first + 1, cause, now)
        return batch

    def _gap(self, batch: _Batch, stream: str, session: str, msg_type: str, first_seq: int,
             missed: int, cause: str, now: float) -> None:
        self.stats.gaps += 1
        self.stats.missed += missed
        batch.add("gaps", rows.gap_row(stream, session, msg_type, first_seq, missed, cause, now))

    def _model_key(self, batch: _Batch, model: ModelRef,
                   tags: tuple[str, ...]) -> tuple[str, str, str]:
        if model is self._last_model[0] and tags is self._last_model[1]:
            key = self._last_model[2]  # the decoder's own objects: the same model as before
        else:
            received = (model.name, model.hash, tags)
            key = self._model_keys.get(received)
            if key is None:
                key = self._model_keys[received] = rows.model_key(model, tags)
            self._last_model = (model, tags, key)
        batch.models[key] = None  # resolved unless known when written
        return key

    def _names(self, names: tuple[str, ...]) -> str:
        """rows.names, remembered: a stream's active tags change seldom from window to
        window."""
        known = self._packed_names.get(names)
        if known is None:
            known = rows.names(names)
            self._packed_chars += len(known)
            if self._packed_chars > MAX_REMEMBERED_NAMES_CHARS:
                self._packed_names.clear()
                self._packed_chars = len(known)
            self._packed_names[names] = known
        return known

    def _block_rows(self, batch: _Batch, block: blocks.Block) -> None:
        block_row, rollup_row = block.rows()
        batch.add(schema.window_blocks.name, block_row)
        batch.add(schema.window_rollups.name, rollup_row)
        batch.messages += len(block.windows)

    def _session_row(self, batch: _Batch, message: ReceivedMessage, session: str) -> None:
        """The stream's session row, the first time it is heard under it (or forgotten: its
        row is there, and ON CONFLICT keeps it)."""
        header = message.header
        key = (header.stream, session)
        if key in self._known:
            return
        with self._overflow_lock:  # its first message may have been dropped at the queue
            restarted = message.restarted or key in self._restarts_dropped
            self._restarts_dropped.discard(key)
        if restarted:
            self.stats.restarts += 1
        batch.add("sessions", rows.session_row(header, session,
                                               self._latest_session.get(header.stream),
                                               bool(restarted)))
        self._known[key] = None
        self._latest_session[header.stream] = session

    def _message_rows(self, batch: _Batch, message: ReceivedMessage, now: float) -> bool:
        """Adds the message's rows; False where it waits in its stream's block."""
        header, body = message.header, message.body
        session = rows.text(header.session)  # opaque to readers: any string up to 128 chars
        if message.gap:
            self._gap(batch, header.stream, session, header.msg_type, header.seq - message.gap,
                      message.gap, "seq", now)
        match body:
            case ScoresBody():
                self._session_row(batch, message, session)
                window = rows.window(header, body, self._names(body.active),
                                     None if body.mood is None else self._names(body.mood.words))
                model = self._model_key(batch, body.model, body.tags)
                for block in self._blocks.add(header.stream, session, model, body.tags, window,
                                              time.monotonic()):
                    self._block_rows(batch, block)
                return False
            case EventBody():
                self._session_row(batch, message, session)
                batch.add(schema.events.name, rows.event_row(header, session, body))
            case StatusBody():
                self._session_row(batch, message, session)
                batch.add(schema.statuses.name, rows.status_row(
                    header, session, body, self._stored_counters(header.stream, body.counters)))
            case TrackBody():
                self._session_row(batch, message, session)
                batch.add(schema.tracks.name, rows.track_row(
                    header, session, body, self._model_key(batch, body.model, body.tags)))
            case SilenceBody():  # since protocol 1.2 (schema revision 0003)
                self._session_row(batch, message, session)
                batch.add(schema.silences.name, rows.silence_row(header, session, body))
            case HeartbeatBody():
                batch.daemons[session] = rows.daemon_row(header, session, body)
            case _:
                pass  # a type from a newer minor version: nothing to store it in
        return True

    def _snapshot_rows(self, batch: _Batch, item: Snapshot) -> None:
        reply = item.reply
        session = str(reply.get("session", ""))
        streams = reply.get("streams") or {}
        for stream, state in streams.items():
            if self._owns is not None and not (isinstance(stream, str) and self._owns(stream)):
                continue  # another shard's recorder stores it
            try:
                # the source's state, title and source, checked as a status message's are
                # (None: a daemon from before they were sent)
                source = None if state.get("state") is None else StatusBody(
                    state=state["state"], title=state.get("title"),
                    source=state.get("source"))
                # under run --processes each stream's worker session, the one its messages
                # come with; checked as a header's session is, and the stream as an id
                stream_session = values.text(state.get("session") or session,
                                             "snapshot session", ProtocolError, empty=False,
                                             longest=MAX_ID_LENGTH)
                batch.add("snapshots", {
                    "taken_at": item.taken_at, "control": item.control,
                    "session": rows.text(stream_session),
                    "stream": validate_stream_id(stream),
                    "tags": schema.pack_names([str(t) for t in state["tags"]]),
                    "smoothed": schema.pack_scores(state["smoothed"]),
                    "active": schema.pack_names([str(t) for t in state["active"]]),
                    "windows": int(state.get("windows", 0)),
                    "state": None if source is None else source.state,
                    "title": None if source is None else rows.text(source.title),
                    "source": None if source is None else rows.text(source.source)})
            except (KeyError, TypeError, ValueError, AttributeError, ProtocolError):
                log.warning("snapshot from %s has an unreadable stream %r", item.control,
                            str(stream)[:200])
        self.stats.snapshots += 1

    def _insert(self, table: sa.Table):
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return dialect.insert(table)

    def _resolve_models(self, conn: sa.Connection, batch: _Batch) -> dict:
        """Model ids for the batch's new models; merged into the cache only after commit."""
        found: dict[tuple[str, str, str], int] = {}
        m = schema.models
        for key in batch.models:
            if key in self._models:
                continue
            name, hash_, tags = key
            conn.execute(self._insert(m).on_conflict_do_nothing(),
                         {"name": name, "hash": hash_, "tags": tags})
            found[key] = conn.execute(sa.select(m.c.id).where(
                m.c.name == name, m.c.hash == hash_, m.c.tags == tags)).scalar_one()
        return found

    def _with_model_ids(self, rows: list[dict], models: dict) -> list[dict]:
        if not rows or "model_id" not in rows[0]:
            return rows
        return [{**row, "model_id": self._models.get(row["model_id"])
                 or models[row["model_id"]]} for row in rows]

    def _resolve_sessions(self, conn: sa.Connection, rows: list[dict]) -> dict:
        """Session ids of blocks' (stream, session) pairs; the row is there unless its
        message failed (then one is made, as for a session met after a restart)."""
        found: dict[tuple[str, str], int] = {}
        ses = schema.sessions
        for row in rows:
            key = row["session_id"]
            if key in self._session_ids or key in found:
                continue
            stream, session = key
            conn.execute(self._insert(ses).on_conflict_do_nothing(), {
                "stream": stream, "session": session, "first_sent_at": row["first_sent_at"],
                "previous_session": None, "restarted": False})
            found[key] = conn.execute(sa.select(ses.c.id).where(
                ses.c.stream == stream, ses.c.session == session)).scalar_one()
        return found

    def _write(self, batch: _Batch) -> None:
        try:
            self._write_batch(batch)
        except sa.exc.OperationalError as exc:
            if not _SQLITE_SCHEMA_MISMATCH.search(str(exc.orig)):
                raise
            # SQLite says a column or table the code writes is missing as an operational
            # error, which would be retried for ever with everything queued behind it:
            # PostgreSQL's UndefinedColumn, a refusal of these rows, is what it is
            raise sa.exc.ProgrammingError(exc.statement, exc.params, exc.orig) from exc

    def _write_batch(self, batch: _Batch) -> None:
        with self.engine.begin() as conn:
            models = self._resolve_models(conn, batch)
            sessions: dict = {}
            # blocks last: their sessions' rows first
            for name, table_rows in sorted(batch.rows.items(),
                                           key=lambda item: item[0] in _BLOCKS):
                table_rows = self._with_model_ids(table_rows, models)
                if name in _BLOCKS:
                    sessions.update(self._resolve_sessions(conn, table_rows))
                    table_rows = [{**row, "session_id": self._session_ids.get(row["session_id"])
                                   or sessions[row["session_id"]]} for row in table_rows]
                # snapshots: the one table without a natural key
                bulk.insert_rows(conn, schema.metadata.tables[name], table_rows,
                                 skip_conflicts=name != "snapshots")
            if batch.daemons:
                d = schema.daemons
                statement = self._insert(d)
                statement = statement.on_conflict_do_update(
                    index_elements=[d.c.session],
                    set_={c: statement.excluded[c]
                          for c in ("last_sent_at", "last_seq", "uptime_s", "streams")})
                conn.execute(statement, list(batch.daemons.values()))
        self._models.update(models)
        self._session_ids.update(sessions)

    def _write_rows_alone(self, batch: _Batch) -> None:
        """After a refused batch: each row in its own transaction; a message whose row is
        refused or fails is counted and stored as a gap. Rows written are removed from the
        batch, so a retry after the database went down resumes where this stopped."""
        now = time.time()
        for name, table_rows in batch.rows.items():
            done = 0
            try:
                for row in table_rows:
                    models = {row["model_id"]: None} if "model_id" in row else {}
                    try:
                        self._write(_Batch(rows={name: [row]}, models=models))
                    except RETRYABLE_DB_ERRORS:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this row's fault, not the batch's
                        self._row_failed(batch, name, row, exc, now)
                    done += 1
            finally:
                del table_rows[:done]
        batch.rows = {}
        if batch.daemons:
            try:
                self._write(_Batch(daemons=batch.daemons))
            except RETRYABLE_DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001
                self._log_failure(REJECTED if isinstance(exc, sa.exc.DBAPIError) else FAILED,
                                  exc, "heartbeat rows")
            batch.daemons = {}

    def _row_failed(self, batch: _Batch, table: str, row: dict[str, Any], exc: Exception,
                    now: float) -> None:
        cause = REJECTED if isinstance(exc, sa.exc.DBAPIError) else FAILED
        if table == schema.window_blocks.name:  # its windows are lost: a gap per run of seqs
            self._block_failed(batch, row, cause, exc, now)
            return
        msg_type = _MSG_TYPE_OF_TABLE.get(table)
        if msg_type is None:  # a gap, session or snapshot row: what it says is lost
            self._log_failure(cause, exc, f"a {table} row of stream {row.get('stream')!r}")
            return
        batch.failed += 1
        gap = _Batch()
        self._message_failed(gap, msg_type, row["stream"], row["session"], row["seq"], cause,
                             exc, now)
        try:
            self._write(gap)
        except Exception as gap_exc:  # noqa: BLE001 - counted and logged: nothing more to do
            self._log_failure(FAILED, gap_exc, "the gap row of a message that was not stored")

    def _block_failed(self, batch: _Batch, row: dict[str, Any], cause: str, exc: Exception,
                      now: float) -> None:
        stream, session = row["session_id"]
        seqs = sorted(blocks.decode(row["data"]).values["seq"])
        batch.failed += len(seqs)
        if cause == REJECTED:
            self.stats.rejected += len(seqs)
        else:
            self.stats.failed += len(seqs)
        self._log_failure(cause, exc, f"a block of {len(seqs)} scores messages of stream "
                                      f"{stream!r} (seq {seqs[0]} on)")
        gap = _Batch()
        first = previous = seqs[0]
        for seq in [*seqs[1:], None]:
            if seq is None or seq != previous + 1:
                self._gap(gap, stream, session, "scores", first, previous - first + 1, cause,
                          now)
                first = seq
            previous = seq
        try:
            self._write(gap)
        except Exception as gap_exc:  # noqa: BLE001 - counted and logged: nothing more to do
            self._log_failure(FAILED, gap_exc, "the gap rows of a block that was not stored")

    def _message_failed(self, batch: _Batch, msg_type: str, stream: str, session: str,
                        seq: int, cause: str, exc: Exception, now: float) -> None:
        """A message that cannot be stored: counted, logged once per kind of failure, and
        kept as a gap of one message where its seq fits the database."""
        if cause == REJECTED:
            self.stats.rejected += 1
        else:
            self.stats.failed += 1
        self._log_failure(cause, exc, f"a {msg_type} message of stream {stream!r} (seq "
                                      f"{seq})")
        if isinstance(seq, int) and 0 <= seq <= MAX_INTEGER:
            self._gap(batch, stream, rows.text(session), msg_type, seq, 1, cause, now)

    def _log_failure(self, cause: str, exc: BaseException, what: str) -> None:
        """The first failure of each kind is logged with what failed; later ones are only
        counted (a peer can send the same bad message for ever)."""
        orig = getattr(exc, "orig", None)  # a database error: the driver's kind says more
        kind = type(orig if orig is not None else exc).__name__
        if ((cause, kind) in self._failures_logged
                or len(self._failures_logged) >= MAX_FAILURE_KINDS_LOGGED):
            return
        self._failures_logged.add((cause, kind))
        detail = str(orig if orig is not None else exc).strip()[:200]
        counter = ("streamtag_record_rejected_messages_total" if cause == REJECTED
                   else "streamtag_record_failed_messages_total")
        log.warning("could not store %s (%s: %s); a message that cannot be stored is kept as "
                    "a gap of cause %r, and further failures of this kind are counted in %s, "
                    "not logged", what, kind, detail, cause, counter)


def start_when_up(engine: Engine, make: Callable[[], Recorder] | Recorder,
                  stop: threading.Event, max_backoff_s: float) -> Recorder | None:
    """Upgrade the schema and start a recorder (``make`` or ``make()``), which reads where it
    left off; retried with back-off while the database is down. The recorder subscribes
    first, so what is published meanwhile waits for it. None when stopped meanwhile (the
    recorder then closed). ConfigError for an error that retrying cannot mend
    (``permanent_db_error``)."""
    backoff = _backoff(max_backoff_s)
    recorder = (make if isinstance(make, Recorder) else make()).connect()
    try:
        started = _start_when_up(engine, recorder, stop, backoff)
    except BaseException:
        recorder.stop(0)
        raise
    if started is None:
        recorder.stop(0)
    return started


def _start_when_up(engine: Engine, recorder: Recorder, stop: threading.Event,
                   backoff: Backoff) -> Recorder | None:
    told = False
    while not stop.is_set():
        try:
            schema.upgrade(engine)
            return recorder.start()
        except sa.exc.DatabaseError as exc:
            permanent = permanent_db_error(exc, engine)
            if permanent is not None:
                raise ConfigError(permanent) from None
            if not isinstance(exc, RETRYABLE_DB_ERRORS):
                raise
            wait_s = backoff.next_wait_s()
            recorder.stats.db_up = False
            recorder.stats.db_errors += 1
            reason = str(exc.orig).strip().splitlines()[0][:200] if str(exc.orig).strip() \
                else type(exc.orig).__name__
            if not told:  # once, then at debug level: the retries say nothing new
                log.warning("cannot reach %s (%s); waiting for it, retrying with back-off up "
                            "to %g s; what the daemons publish meanwhile waits",
                            schema.describe_url(engine), reason, backoff.max_backoff_s)
                told = True
            else:
                log.debug("cannot reach %s (%s); retrying in %.1f s",
                          schema.describe_url(engine), reason, wait_s)
            until = time.monotonic() + wait_s
            while not stop.is_set() and time.monotonic() < until:
                recorder.hold()
                stop.wait(min(_RECV_SLICE_MS / 1e3, max(0.0, until - time.monotonic())))
    return None


# What a PostgreSQL server says (its FATAL message; psycopg gives no SQLSTATE for a failed
# connection) when the login or the database is wrong: retrying cannot mend it.
_PG_REFUSED_LOGIN = ("password authentication failed", "authentication failed",
                     "no pg_hba.conf entry", "no password supplied")
_PG_MISSING = re.compile(r'(database|role) "[^"]*" does not exist')
# SQLite's errors for a file that cannot be opened or written at all (a missing folder, no
# permission; a file that is not a database: schema.not_a_database); a locked or busy database
# is retried.
# the table and column of the ALTER that found its column already there
_ADDED_COLUMN = re.compile(r"ALTER\s+TABLE\s+\"?(\w+)\"?\s+ADD\s+(?:COLUMN\s+)?\"?(\w+)",
                           re.IGNORECASE)
_SQLITE_PERMANENT = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")


def permanent_db_error(exc: sa.exc.DBAPIError, engine: Engine) -> str | None:
    """Why ``exc`` will not go away by retrying, with the fix: a login the server refuses, a
    database or user that does not exist, an SQLite file that cannot be opened. None for an
    error worth retrying (the server is down or refuses connections, a busy database)."""
    url = schema.describe_url(engine)
    text = str(exc.orig).strip()
    not_sqlite = schema.not_a_database(exc, engine)
    if not_sqlite:
        return not_sqlite
    detail = text.rpartition("FATAL:")[2].strip()[:200] or text[:200]
    if engine.url.get_backend_name() == "sqlite":
        if "duplicate column name" in text:  # an upgrade before they were one transaction
            added = _ADDED_COLUMN.search(str(getattr(exc, "statement", "") or ""))
            table, column = added.groups() if added else ("TABLE", "COLUMN")
            return (f"{url} was left half-upgraded ({detail}): an upgrade by an older "
                    "streamtag was stopped midway, and its first changes stayed while its "
                    "revision did not; restore the database from a backup, or drop that "
                    f"column (sqlite3 {shlex.quote(engine.url.database or 'FILE')} "
                    f"'ALTER TABLE {table} DROP COLUMN {column}') and run 'streamtag record "
                    f"--db {shlex.quote(str(engine.url))} --upgrade' again")
        if getattr(exc.orig, "sqlite_errorname", None) in _SQLITE_PERMANENT:
            return (f"cannot use the SQLite file {engine.url.database!r} ({detail}); check that "
                    "its folder exists and that this user may write there, or give another "
                    "--db sqlite:///PATH")
        return None
    lowered = text.lower()
    if any(words in lowered for words in _PG_REFUSED_LOGIN):
        return (f"{url} refused the login ({detail}); check the user name and password in "
                "--db (postgresql://USER:PASSWORD@HOST:PORT/DATABASE) and the server's "
                "pg_hba.conf")
    missing = _PG_MISSING.search(text)
    if missing:
        what = missing.group(1)
        return (f"{url}: {detail}; "
                + ("create it (createdb NAME) or name an existing database in --db"
                   if what == "database" else "create the user (createuser NAME) or name an "
                   "existing one in --db"))
    return None


def _backoff(max_backoff_s: float) -> Backoff:
    """The recorder's retries: from FIRST_BACKOFF_S (or less, under a smaller cap), doubling
    up to ``max_backoff_s``, for ever."""
    return Backoff("recorder", reconnect=True, initial_backoff_s=min(FIRST_BACKOFF_S,
                   max_backoff_s), max_backoff_s=max_backoff_s, max_reconnects=None)
