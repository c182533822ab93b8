"""Windows stored compactly: a stream's scores messages packed per minute into one
`window_blocks` row, a per-minute rollup of each written beside it, and the one way readers
get windows back (`windows`).

A block holds the windows of one stream, daemon session and model whose `sent_at` falls in one
minute, column by column, then zlib-compressed: seq, times and sample positions as deltas
(a constant hop packs to almost nothing), scores quantised to a byte per tag (1/255) as deltas
along time, the active tags, mood and content as small per-block
dictionaries, and the audio figures as integers at the precision the daemon measures them to.
What a block keeps, and to what precision (docs/history.md says the same):

- seq, start_sample, end_sample, clipped: exact;
- sent_at, start_s, end_s: to 1 microsecond;
- active tags, mood words, content: exact (the same JSON text as sent, in its order);
- raw and smoothed scores: to 1/255 (half of that either way) where they lie in [0, 1], as
  float32 (as before) in a block where one does not;
- rms_dbfs, peak_dbfs, momentary_lufs, short_term_lufs: to 0.01 dB (the daemon rounds them so);
  onset_rate_hz, valence, arousal: to 0.001; energy: to 1e-6; latency_ms: to 0.01 ms.

A rollup (`window_rollups`, one per block) keeps per tag the mean smoothed score (1/255) and
the number of windows it was active in (exact; a window of speech or dead air counts for no
tag), the windows counted per content, the mean RMS
level, the highest peak and the mean short-term loudness (power mean, as loudness adds up).
"""

from __future__ import annotations

import collections
import json
import struct
import weakref
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa

from streamtag.engine.content import MUSIC
from streamtag.history import schema

FORMAT = 1
BLOCK_S = 60.0        # a block per minute of sent_at (and per stream, session and model)
MAX_BLOCK_AGE_S = 60.0  # a block is written at the latest this long after its first window
IDLE_S = 2.0            # ... or when no window came for this long (or 2.5 hops, if longer)
MAX_BLOCK_WINDOWS = 4096  # a block's windows at most, whatever the hop
ZLIB_LEVEL = 6

_I32_NONE = np.iinfo(np.int32).min
_I32_MAX = np.iinfo(np.int32).max
# (column, scale): stored as round(value * scale) in int32, None as _I32_NONE
_SCALED = (("latency_ms", 100), ("rms_dbfs", 100), ("peak_dbfs", 100),
           ("onset_rate_hz", 1000), ("energy", 1_000_000), ("valence", 1000),
           ("arousal", 1000), ("momentary_lufs", 100), ("short_term_lufs", 100))
_DICTIONARY = ("active", "mood", "content")
_HEADER = struct.Struct("<BIHB")  # format, windows, tags, scores kind
_U8, _F32 = 0, 1  # scores kinds


class _WindowFields(NamedTuple):
    seq: int
    sent_at: float
    start_s: float
    end_s: float
    start_sample: int
    end_sample: int
    raw: Sequence[float]   # one score per tag (a tuple or an array)
    smoothed: Sequence[float]
    active: str            # JSON array of tag names, as stored before
    latency_ms: float
    rms_dbfs: float | None = None
    peak_dbfs: float | None = None
    clipped: int | None = None
    onset_rate_hz: float | None = None
    energy: float | None = None
    mood: str | None = None  # JSON array of words
    valence: float | None = None
    arousal: float | None = None
    momentary_lufs: float | None = None
    short_term_lufs: float | None = None
    content: str | None = None
    # raw then smoothed as float64 bytes (native order), where the decoder read them so: a
    # block's arrays from these rather than from every float of the tuples above
    scores_f64: bytes | None = None


# A block's integers are int64, its times int64 microseconds.
I64_LOWEST, I64_HIGHEST = -2**63, 2**63 - 1
MOST_S = 9.2e12  # seconds whose microseconds fit an int64


class Window(_WindowFields):
    """What a block keeps of one scores message (its row of the old `scores` table, less the
    header's stream and session, which the block holds once). A tuple: a recorder makes one
    per message."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Window:
        self = super().__new__(cls, *args, **kwargs)
        check_window(self)
        return self


def check_window(window: _WindowFields) -> None:
    """OverflowError for what does not fit a block: it fails here, as one message, not its
    block at write."""
    for value in (window.seq, window.start_sample, window.end_sample, window.clipped):
        if value is not None and not I64_LOWEST <= value <= I64_HIGHEST:
            raise OverflowError(f"{value} does not fit 64 bits")
    for seconds in (window.sent_at, window.start_s, window.end_s):
        if not -MOST_S < seconds < MOST_S:  # NaN too
            raise OverflowError(f"{seconds} s does not fit 64 bits of microseconds")


# ---------------------------------------------------------------- the blob

def _shuffled(array: np.ndarray) -> bytes:
    """Bytes of equal significance together: zlib then finds the runs of zero high bytes."""
    size = array.dtype.itemsize
    return array.view(np.uint8).reshape(-1, size).T.tobytes() if size > 1 else array.tobytes()


def _unshuffled(data: memoryview, dtype: str, n: int) -> np.ndarray:
    dt = np.dtype(dtype)
    raw = np.frombuffer(data, dtype=np.uint8, count=n * dt.itemsize)
    return raw.reshape(dt.itemsize, n).T.copy().view(dt).reshape(n)


def _quantised(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


_FIELD = {name: i for i, name in enumerate(_WindowFields._fields)}


def _scores(windows: Sequence[Window], n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw, smoothed) of a block's windows as (windows, tags) arrays: one conversion per
    block, not per window."""
    n = len(windows)
    packed = [w.scores_f64 for w in windows]
    if None not in packed:
        both = b"".join(packed)  # type: ignore[arg-type]
        if len(both) == n * 2 * n_tags * 8:
            scores = np.frombuffer(both, dtype=np.float64).reshape(n, 2, n_tags)
            return scores[:, 0], scores[:, 1]
    raw = np.array([w[6] for w in windows], dtype=np.float64).reshape(n, n_tags)
    smoothed = np.array([w[7] for w in windows], dtype=np.float64).reshape(n, n_tags)
    return raw, smoothed


def encode(windows: Sequence[Window], n_tags: int,
           scores: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """One block's windows as bytes (format byte, then zlib); ``scores``: their `_scores`,
    where the caller has them already."""
    n = len(windows)
    raw, smoothed = scores if scores is not None else _scores(windows, n_tags)
    kind = _U8 if n * n_tags == 0 or (raw.min() >= 0.0 and raw.max() <= 1.0
                                      and smoothed.min() >= 0.0 and smoothed.max() <= 1.0) \
        else _F32
    columns = list(zip(*windows, strict=True)) if n else [()] * len(_FIELD)
    names: list[list[Any]] = []
    parts: list[bytes] = []
    for column in _DICTIONARY:
        texts = columns[_FIELD[column]]
        if n and texts.count(texts[0]) == n:  # one value (no mood, one content): said once
            names.append([texts[0]])
            parts.append(bytes(2 * n))
            continue
        index: dict[Any, int] = {}
        codes = np.array([index.setdefault(t, len(index)) for t in texts], dtype=np.uint16)
        names.append(list(index))
        parts.append(_shuffled(codes))
    parts.insert(0, json.dumps(names, ensure_ascii=False, separators=(",", ":")).encode())
    parts.insert(0, struct.pack("<I", len(parts[0])))

    def ints(name: str) -> np.ndarray:
        return np.array(columns[_FIELD[name]], dtype=np.int64)

    def delta(array: np.ndarray) -> bytes:
        return _shuffled(np.diff(array, prepend=np.int64(0)))

    # round half to even, as Python's round
    sent_us, start_us, end_us = (np.rint(np.array(columns[_FIELD[name]], dtype=np.float64)
                                         * 1e6).astype(np.int64)
                                 for name in ("sent_at", "start_s", "end_s"))
    start_sample = ints("start_sample")
    clipped = np.array([-1 if c is None else c for c in columns[_FIELD["clipped"]]],
                       dtype=np.int64)
    parts += [delta(ints("seq")), delta(sent_us), delta(start_us), _shuffled(end_us - start_us),
              delta(start_sample), _shuffled(ints("end_sample") - start_sample),
              _shuffled(clipped)]
    for column, scale in _SCALED:
        given = columns[_FIELD[column]]
        if given.count(None) == n:  # no audio figures: nothing to convert
            parts.append(_shuffled(np.full(n, _I32_NONE, dtype=np.int32)))
            continue
        values = np.array(given, dtype=np.float64)  # None: nan
        scaled = np.clip(np.rint(values * scale), -_I32_MAX, _I32_MAX)
        parts.append(_shuffled(np.where(np.isnan(scaled), _I32_NONE, scaled)
                               .astype(np.int32)))
    if kind == _U8:
        for q in (_quantised(raw).T, _quantised(smoothed).T):  # tag by tag, along time
            parts.append(np.diff(q, axis=1, prepend=np.uint8(0)).tobytes())
    else:
        parts.append(_shuffled(raw.T.astype(schema.SCORE_DTYPE).ravel()))
        parts.append(_shuffled(smoothed.T.astype(schema.SCORE_DTYPE).ravel()))
    payload = _HEADER.pack(FORMAT, n, n_tags, kind) + b"".join(parts)
    return bytes([FORMAT]) + zlib.compress(payload, ZLIB_LEVEL)


@dataclass
class Columns:
    """A decoded block, column by column (None where a window had no value)."""

    n: int
    values: dict[str, list[Any]]
    raw: np.ndarray       # (windows, tags) float64
    smoothed: np.ndarray


def decode(data: bytes) -> Columns:
    if not data or data[0] != FORMAT:
        raise ValueError(f"a window block of format {data[:1]!r}; this streamtag reads format "
                         f"{FORMAT}")
    payload = memoryview(zlib.decompress(data[1:]))
    _, n, n_tags, kind = _HEADER.unpack_from(payload, 0)
    at = _HEADER.size
    (size,) = struct.unpack_from("<I", payload, at)
    at += 4
    names = json.loads(bytes(payload[at:at + size]))
    at += size
    out: dict[str, list[Any]] = {}

    def take(dtype: str) -> np.ndarray:
        nonlocal at
        array = _unshuffled(payload[at:], dtype, n)
        at += n * np.dtype(dtype).itemsize
        return array

    for column, words in zip(_DICTIONARY, names, strict=True):
        out[column] = [words[i] for i in take("<u2")]
    seq, sent, start, length = (np.cumsum(take("<i8")), np.cumsum(take("<i8")),
                                np.cumsum(take("<i8")), None)
    length = take("<i8")
    out["seq"] = seq.tolist()
    out["sent_at"] = (sent / 1e6).tolist()
    out["start_s"] = (start / 1e6).tolist()
    out["end_s"] = ((start + length) / 1e6).tolist()
    start_sample = np.cumsum(take("<i8"))
    out["start_sample"] = start_sample.tolist()
    out["end_sample"] = (start_sample + take("<i8")).tolist()
    out["clipped"] = [None if v < 0 else v for v in take("<i8").tolist()]
    for column, scale in _SCALED:
        ints = take("<i4")
        out[column] = [None if v == _I32_NONE else v / scale for v in ints.tolist()]
    if kind == _U8:
        count = n * n_tags
        q_raw, q_smoothed = (np.cumsum(np.frombuffer(payload, np.uint8, count, start)
                                       .reshape(n_tags, n), axis=1, dtype=np.uint8)
                             for start in (at, at + count))
        raw, smoothed = q_raw.T / 255.0, q_smoothed.T / 255.0
    else:
        raw = _unshuffled(payload[at:], "<f4", n * n_tags).reshape(n_tags, n).T
        at += 4 * n * n_tags
        smoothed = _unshuffled(payload[at:], "<f4", n * n_tags).reshape(n_tags, n).T
        raw, smoothed = raw.astype(np.float64), smoothed.astype(np.float64)
    return Columns(n, out, raw, smoothed)


# ---------------------------------------------------------------- rollups

def rollup(windows: Sequence[Window], tags: Sequence[str],
           smoothed: np.ndarray | None = None) -> dict[str, Any]:
    """A block's per-minute figures (the `window_rollups` columns but its keys); ``smoothed``:
    the windows' smoothed scores as `_scores` gives them, where the caller has them."""
    n = len(windows)
    if smoothed is None:
        smoothed = _scores(windows, len(tags))[1]
    position = {tag: i for i, tag in enumerate(tags)}
    active = np.zeros(len(tags), dtype=np.int64)
    # each set of active tags read once per block, however many windows share it
    shared = collections.Counter((w.active, w.content) for w in windows)
    # speech and dead air are no tag's airtime (history.content)
    airtime = [(names, count) for (names, content_kind), count in shared.items()
               if content_kind in (None, MUSIC)]
    if airtime:  # every set of names parsed at once
        parsed = json.loads("[" + ",".join(names for names, _ in airtime) + "]")
        for tags_on, (_, count) in zip(parsed, airtime, strict=True):
            for tag in tags_on:
                if tag in position:
                    active[position[tag]] += count
    rms = [w.rms_dbfs for w in windows if w.rms_dbfs is not None]
    peak = [w.peak_dbfs for w in windows if w.peak_dbfs is not None]
    loud = [w.short_term_lufs for w in windows if w.short_term_lufs is not None]
    content: dict[str, int] = {}
    for (_, content_kind), count in shared.items():
        if content_kind is not None:
            content[content_kind] = content.get(content_kind, 0) + count
    return {
        "windows": n, "first_sent_at": windows[0].sent_at, "last_sent_at": windows[-1].sent_at,
        "mean_smoothed": _quantised(smoothed.mean(axis=0) if n else smoothed.sum(axis=0))
        .tobytes(),
        "active_windows": active.astype("<u2").tobytes(),  # MAX_BLOCK_WINDOWS fits
        "rms_dbfs": round(float(np.mean(rms)), 2) if rms else None,
        "peak_dbfs": round(float(np.max(peak)), 2) if peak else None,
        "short_term_lufs": (round(float(10 * np.log10(np.mean(np.power(10.0, np.array(loud)
                                                                        / 10)))), 2)
                            if loud else None),
        "content": (json.dumps(content, sort_keys=True, separators=(",", ":"))
                    if content else None)}


def unpack_rollup(row: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean smoothed score per tag, windows active per tag) of a `window_rollups` row."""
    return (np.frombuffer(row.mean_smoothed, np.uint8) / 255.0,
            np.frombuffer(row.active_windows, "<u2").astype(np.int64))


# ---------------------------------------------------------------- open blocks

@dataclass
class Block:
    """The windows of one stream, session and model in one minute, not yet written."""

    stream: str
    session: str
    model: Any            # the recorder's model key (resolved to an id at write)
    tags: tuple[str, ...]
    minute: int
    opened: float         # time.monotonic() at its first window
    windows: list[Window] = field(default_factory=list)
    last_added: float = 0.0
    seqs: set[int] = field(default_factory=set)

    def rows(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Its `window_blocks` and `window_rollups` rows; `session_id` is the (stream,
        session) pair and `model_id` the model key, resolved when written."""
        windows = self.windows
        sent = [w.sent_at for w in windows]
        key = {"session_id": (self.stream, self.session), "model_id": self.model,
               "first_seq": windows[0].seq}
        scores = _scores(windows, len(self.tags))
        block = {**key, "last_seq": max(self.seqs), "windows": len(windows),
                 "first_sent_at": min(sent), "last_sent_at": max(sent),
                 "data": encode(windows, len(self.tags), scores)}
        return block, {**key, "minute_at": self.minute * BLOCK_S,
                       **rollup(windows, self.tags, scores[1])}


class OpenBlocks:
    """Each stream's block under way, in memory until it is due: at a new minute, session or
    model, MAX_BLOCK_AGE_S after its first window, or when its stream goes quiet. A crash
    loses at most these (a minute of each stream), which the recorder started again stores as
    a seq gap, since it resumes from the last seq written."""

    def __init__(self, most: int, max_age_s: float = MAX_BLOCK_AGE_S) -> None:
        self.most, self.max_age_s = most, max_age_s
        self.open: dict[str, Block] = {}
        self.hop_s: dict[str, float] = {}  # a stream's spacing of windows, from its last block
        self.last_seq: dict[tuple[str, str], int] = {}  # seq high-water of written blocks

    def add(self, stream: str, session: str, model: Any, tags: Sequence[str],
            window: Window, now: float) -> list[Block]:
        """Adds a window; returns the blocks it closed. A window already taken (the same
        message received twice, from two paths) is left out."""
        block = self.open.get(stream)
        if block is not None and block.session == session and window.seq in block.seqs:
            return []
        high = self.last_seq.get((stream, session))
        if high is not None and window.seq <= high:  # seqs only grow: a copy of one written
            return []
        closed: list[Block] = []
        minute = int(window.sent_at // BLOCK_S)
        if block is not None and (block.session != session or block.model != model
                                  or block.minute != minute
                                  or len(block.windows) >= MAX_BLOCK_WINDOWS):
            closed.append(self._close(stream))
            block = None
        if block is None:
            if len(self.open) >= self.most:
                closed.append(self._close(next(iter(self.open))))
            block = self.open[stream] = Block(stream, session, model, tuple(tags), minute, now)
        block.windows.append(window)
        block.seqs.add(window.seq)
        block.last_added = now
        return closed

    def due(self, now: float) -> list[Block]:
        out = []
        for stream, block in list(self.open.items()):
            quiet = min(self.max_age_s, max(IDLE_S, 2.5 * self.hop_s.get(stream, 0.0)))
            if now - block.opened >= self.max_age_s or now - block.last_added >= quiet:
                out.append(self._close(stream))
        return out

    def close_all(self) -> list[Block]:
        return [self._close(stream) for stream in list(self.open)]

    def _close(self, stream: str) -> Block:
        block = self.open.pop(stream)
        windows = block.windows
        if len(windows) > 1:
            self.hop_s[stream] = min(MAX_BLOCK_AGE_S, max(0.0, (
                windows[-1].sent_at - windows[0].sent_at) / (len(windows) - 1)))
        key = (stream, block.session)
        self.last_seq[key] = max(self.last_seq.get(key, -1), max(block.seqs))
        while len(self.last_seq) > 4 * self.most:
            self.last_seq.pop(next(iter(self.last_seq)))
        while len(self.hop_s) > 4 * self.most:
            self.hop_s.pop(next(iter(self.hop_s)))
        return block


# ---------------------------------------------------------------- reading

# The windows decoded for a reader, in a temporary table of the old `scores` columns that
# readers use, so that their queries stay what they were.
WINDOW_COLUMNS = ("stream", "session", "seq", "sent_at", "model_id", "start_s", "end_s",
                  "start_sample", "end_sample", "active", "short_term_lufs", "content")
_DECODED = ("seq", "sent_at", "start_s", "end_s", "start_sample", "end_sample", "active",
            "latency_ms", "rms_dbfs", "peak_dbfs", "clipped", "onset_rate_hz", "energy", "mood",
            "valence", "arousal", "momentary_lufs", "short_term_lufs", "content")
# A reader's range is widened by this much: its queries look a day around it (a silence that
# began the day before, the window after a gap).
READ_MARGIN_S = 86400.0
READ_BLOCKS = 256  # blocks fetched at a time
_read_meta = sa.MetaData()
window_rows = sa.Table(
    "streamtag_windows", _read_meta,
    sa.Column("stream", sa.String(128), nullable=False),
    sa.Column("session", sa.String(128), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("model_id", sa.Integer, nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("end_s", sa.Float, nullable=False),
    sa.Column("start_sample", sa.BigInteger, nullable=False),
    sa.Column("end_sample", sa.BigInteger, nullable=False),
    sa.Column("active", sa.Text, nullable=False),
    sa.Column("short_term_lufs", sa.Float),
    sa.Column("content", sa.String(16)),
    sa.Index("ix_streamtag_windows_stream_sent_at", "stream", "session", "sent_at"),
    prefixes=["TEMPORARY"])
_loaded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> range


def _overlapping(since: float | None, until: float | None) -> list:
    """Conditions on blocks that hold windows sent in [since, until]. A block's windows share
    a minute, so its first one is less than BLOCK_S before its last: the bound on
    first_sent_at lets PostgreSQL read only the partitions of the days asked for."""
    b = schema.window_blocks.c
    return [*([b.last_sent_at >= since, b.first_sent_at > since - BLOCK_S]
              if since is not None else []),
            *([b.first_sent_at <= until] if until is not None else [])]


def block_rows(conn: sa.Connection, streams: Sequence[str] | None = None,
               since: float | None = None, until: float | None = None):
    """`window_blocks` rows with their stream and session, overlapping [since, until]."""
    b, s = schema.window_blocks.c, schema.sessions.c
    query = (sa.select(s.stream, s.session, b.model_id, b.first_seq, b.windows, b.data)
             .join_from(schema.window_blocks, schema.sessions, b.session_id == s.id)
             .where(*([s.stream.in_(list(streams))] if streams else []),
                    *_overlapping(since, until))
             .order_by(s.stream, s.session, b.first_sent_at))
    return conn.execute(query)


def sent_after(conn: sa.Connection, streams: Sequence[str], session: str, at: float) -> bool:
    """Whether a window of `streams` under `session` was sent after `at` (its block's last
    window tells, whatever range `windows` loaded)."""
    b, s = schema.window_blocks.c, schema.sessions.c
    return conn.execute(sa.select(b.id).join_from(
        schema.window_blocks, schema.sessions, b.session_id == s.id).where(
        s.stream.in_(list(streams)), s.session == session, b.last_sent_at > at,
        b.first_sent_at > at - BLOCK_S)  # the partitions from at's day on
        .limit(1)).first() is not None


def decoded_windows(conn: sa.Connection, streams: Sequence[str] | None = None,
                    since: float | None = None, until: float | None = None,
                    scores: bool = False) -> list[dict[str, Any]]:
    """Every window of `streams` (all when None) sent in [since, until], as the old `scores`
    rows (`raw` and `smoothed` as float arrays with `scores`), in order of stream, session
    and sent_at."""
    out = []
    for row in block_rows(conn, streams, since, until):
        columns = decode(row.data)
        values = columns.values
        for i in range(columns.n):
            at = values["sent_at"][i]
            if (since is not None and at < since) or (until is not None and at > until):
                continue
            window = {"stream": row.stream, "session": row.session, "model_id": row.model_id,
                      **{name: values[name][i] for name in _DECODED}}
            if scores:
                window["raw"], window["smoothed"] = columns.raw[i], columns.smoothed[i]
            out.append(window)
    return out


def _window_tuples(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                   until: float | None) -> Iterator[list[tuple]]:
    """The reader's table's rows (WINDOW_COLUMNS) of the windows sent in [since, until],
    READ_BLOCKS blocks' at a time (a day of many stations does not fit in memory at once)."""
    b, s = schema.window_blocks.c, schema.sessions.c
    found = conn.execute(
        sa.select(b.id, s.stream, s.session, b.model_id)
        .join_from(schema.window_blocks, schema.sessions, b.session_id == s.id)
        .where(*([s.stream.in_(list(streams))] if streams else []),
               *_overlapping(since, until))).all()
    for start in range(0, len(found), READ_BLOCKS):
        part = found[start:start + READ_BLOCKS]
        data = dict(conn.execute(sa.select(b.id, b.data).where(
            b.id.in_([row.id for row in part]), *_overlapping(since, until))).all())
        out: list[tuple] = []
        for row in part:
            values = decode(data[row.id]).values
            n = len(values["seq"])
            rows = zip([row.stream] * n, [row.session] * n, values["seq"], values["sent_at"],
                       [row.model_id] * n, *(values[name] for name in WINDOW_COLUMNS[5:]),
                       strict=True)
            out += [r for r in rows if (since is None or r[3] >= since)
                    and (until is None or r[3] <= until)]
        yield out


def windows(conn: sa.Connection, streams: Sequence[str] | None = None,
            since: float | None = None, until: float | None = None,
            margin_s: float = READ_MARGIN_S) -> sa.Table:
    """The one way readers read windows: a table of the old `scores` columns that readers use,
    holding the windows of `streams` sent within `margin_s` of [since, until], decoded from
    their blocks into a temporary table of this connection (a reader that looks nowhere past
    its range, such as a plot's strip, asks for no margin). Called again with no range, it is
    the table loaded last on this connection (or every window, if none was)."""
    asked = (tuple(streams) if streams else None, since, until)
    loaded = _loaded.get(conn)
    if loaded is not None and (loaded == (*asked, margin_s) or asked == (None, None, None)):
        return window_rows
    lo = None if since is None else since - margin_s
    hi = None if until is None else until + margin_s
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {window_rows.name}")
    window_rows.create(conn)
    names = ", ".join(WINDOW_COLUMNS)
    driver = conn.connection.driver_connection
    assert driver is not None  # a Connection's own driver connection while it is open
    for rows in _window_tuples(conn, streams, lo, hi):  # a part read, then written
        if conn.dialect.name == "postgresql":
            with driver.cursor() as cursor, cursor.copy(
                    f"COPY {window_rows.name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        elif rows:
            marks = ", ".join("?" * len(WINDOW_COLUMNS))
            driver.executemany(f"INSERT INTO {window_rows.name} ({names}) VALUES ({marks})",
                               rows)
    _loaded[conn] = (*asked, margin_s)
    return window_rows


def load_none(conn: sa.Connection, streams: Sequence[str] | None = None,
              since: float | None = None, until: float | None = None) -> sa.Table:
    """The reader's table empty, as `windows` for this range would give it: for a report read
    from rollups (history.tiers), whose window-level details are left out."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {window_rows.name}")
    window_rows.create(conn)
    _loaded[conn] = (tuple(streams) if streams else None, since, until, READ_MARGIN_S)
    return window_rows
