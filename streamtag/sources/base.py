"""What every source shares: the chunk it yields, the status callback, the ``Source`` interface.

A source turns one input (a file, a URL, a capture device, a pipe) into mono float32 chunks at
the consumer's sample rate, each carrying the absolute index of its first sample, so the engine
can place every window in the stream's audio time however the input was chunked.
"""

from __future__ import annotations

import abc
import collections
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from streamtag.errors import SourceError
from streamtag.sources.decode_turns import Turns
from streamtag.sources.loudness import StreamLoudness
from streamtag.sources.resample import Resampler
from streamtag.text import without_escape_sequences


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray  # 1-D float32, mono, at the target rate
    sample_index: int  # absolute index (target rate) of samples[0] in this stream
    arrival: float  # time.monotonic() when the chunk was produced (for latency)
    # EBU R128 loudness blocks completed since the last chunk, when the source measures it:
    # (stream sample where the 100 ms block ends, its power); streamtag.sources.loudness
    loudness: tuple[tuple[int, float], ...] = ()


# (state, error text or None, extra such as {"title": ..., "reconnects": n}).
# States: "starting", "running", "reconnecting", "ended", "failed".
StatusCallback = Callable[[str, str | None, dict], None]

STATES = ("starting", "running", "reconnecting", "ended", "failed")


def _ignore_status(state: str, error: str | None, extra: dict) -> None:
    pass


# -- titles: text from a station, bounded and cleaned where it arrives -------------------------

MAX_TITLE_CHARS = 256  # a title is cut to this many characters (ICY allows 4080 bytes)
_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")  # line and tab breaks: one space
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def clean_title(text: str) -> str:
    """A title from outside as it may be shown anywhere: without control characters (C0, DEL,
    C1), terminal escape sequences and the invisible characters that make text lie
    (``text.HIDDEN_FORMATTING``: bidirectional overrides, zero-width spaces, tag characters),
    breaks made spaces, at most ``MAX_TITLE_CHARS`` characters; "" when nothing is left."""
    text = without_escape_sequences(text[:16 * MAX_TITLE_CHARS])
    text = _CONTROLS.sub("", _BREAKS.sub(" ", text)).strip()[:MAX_TITLE_CHARS]
    # once more: a control taken out can join a run of joiners, and the cut can leave a
    # flag's tag characters without their end
    return without_escape_sequences(text).strip()


def title_from_tags(*metadata: dict) -> str | None:
    """"Artist - Title" from the first of ``metadata`` (dicts of tags, any key case) that has a
    title; just the title without an artist; None without a title. Tags are text from whoever
    made the file or runs the station: cleaned as a station's titles are (``clean_title``)."""
    for tags in metadata:
        lower = {str(k).lower(): str(v) for k, v in tags.items()}
        title = clean_title(lower.get("title", ""))
        if title:
            artist = clean_title(lower.get("artist", ""))
            return clean_title(f"{artist} - {title}") if artist else title
    return None


# Packet side data that carries a stream's new tags, as FFmpeg packs a dictionary (key NUL
# value NUL ...): a chained Ogg stream's next link (Vorbis, Opus comments), a metadata update.
TAG_SIDE_DATA = ("strings_metadata", "metadata_update")
MAX_TAG_BYTES = 1 << 20  # larger packed tags (cover art in a comment) are not read


def _side_data_kind(data) -> str | None:
    """A packet side data's kind by PyAV's name, None for a kind its FFmpeg has and PyAV's list
    does not (PyAV looks the name up by the number, past the end of its list)."""
    try:
        return data.data_type
    except (IndexError, ValueError, KeyError):
        return None


def packet_tags(packet) -> dict[str, str] | None:
    """The tags a demuxed PyAV packet brings with it, when the stream's metadata changes at
    this packet (a new link of a chained Ogg stream); None when it brings none. PyAV shows a
    stream's ``metadata`` as it was when the container opened, so a change is seen here."""
    # iter_sidedata, not has_sidedata per kind: most packets carry none, and the loop over
    # none costs a seventh of the two lookups (they took a tenth of an MP3 source's time)
    found = {}
    for data in packet.iter_sidedata():
        kind = _side_data_kind(data)
        if kind in TAG_SIDE_DATA:
            found[kind] = data
    for kind in TAG_SIDE_DATA:
        data = found.get(kind)
        if data is None:
            continue
        if data.data_size > MAX_TAG_BYTES:
            return None
        parts = bytes(data).split(b"\0")
        tags = {}
        for key, value in zip(parts[0::2], parts[1::2], strict=False):
            if key:
                tags[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        return tags
    return None


class TitleLimit:
    """At most ``max_changes`` title changes in any ``window_s`` seconds: a station that sends a
    new title in every metadata block would otherwise make a status message, a track and a
    recorder row of each."""

    def __init__(self, max_changes: int = 12, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_changes, self.window_s, self.clock = max_changes, window_s, clock
        self._times: collections.deque[float] = collections.deque()

    def allow(self) -> bool:
        """Whether a change may be reported now (it is then counted as reported)."""
        now = self.clock()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.max_changes:
            return False
        self._times.append(now)
        return True


class Source(abc.ABC):
    """One input stream. ``open`` once, iterate ``chunks`` once, ``close`` always.

    ``live`` sources (device, http) run on the producer's clock, so the consumer must keep up:
    a device keeps capturing into a bounded queue and drops (counts as overflows) what a slow
    consumer does not take; a network stream is read only as ``chunks()`` is iterated, so a
    consumer that stalls makes the server drop the connection (then it reconnects). Others
    (file, pipe) are simply paced by the consumer.
    """

    # What a kind declares (streamtag.sources.KINDS lists the kinds): its name, the schemes
    # of the specs that name it ("SCHEME:..."), and how such a spec is written, for help texts
    # and errors.
    kind: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()
    spec_help: ClassVar[str] = ""
    live: bool = False
    description: str = ""

    @classmethod
    def target_of(cls, rest: str, text: str) -> str:
        """The target a spec of this kind names (what follows the scheme's colon, ``rest``, of
        the whole spec ``text``), as ``SourceSpec.target``; SourceError for a spec that is not
        written as the kind takes it."""
        return rest

    @classmethod
    def arguments(cls, target: str) -> tuple[str, ...]:
        """The source's positional arguments for a spec's target (its options are keywords)."""
        return (target,)

    def __init__(self) -> None:
        self.counters: dict = {"chunks": 0, "samples": 0, "overflows": 0, "reconnects": 0,
                               "decode_errors": 0}
        self.sample_rate: float | None = None
        self._on_status: StatusCallback = _ignore_status
        self._resampler: Resampler | None = None
        self._state: str | None = None
        # Set by the daemon: the turns its source threads take (streamtag.sources.decode_turns);
        # every wait for a clock, a peer or a device goes through ``_waiting`` so others work
        # meanwhile.
        self.turns: Turns | None = None
        # Set before ``open``: measure EBU R128 loudness at the input's own rate and channels
        # (the chunks then carry its blocks).
        self.measure_loudness = False
        self._loudness: StreamLoudness | None = None

    # -- the interface ---------------------------------------------------------------------

    def open(self, sample_rate: float, on_status: StatusCallback | None = None) -> None:
        """Prepares the source to yield chunks at ``sample_rate``; raises SourceError."""
        if not sample_rate or sample_rate <= 0:
            raise SourceError(f"{self.description}: the target sample rate must be positive, "
                              f"got {sample_rate!r}")
        self.sample_rate = float(sample_rate)
        self._on_status = on_status or _ignore_status
        self._resampler = Resampler(self.sample_rate)
        self._loudness = StreamLoudness(self.sample_rate) if self.measure_loudness else None
        self._status("starting")
        try:
            self._open()
        except SourceError as exc:
            self._status("failed", str(exc))
            raise

    @abc.abstractmethod
    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        """Yields chunks until the input ends or ``stop`` is set; raises SourceError on a fatal
        error (after yielding what it could)."""

    def close(self) -> None:  # noqa: B027 - optional: most kinds hold nothing open
        """Releases what ``open`` acquired; safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # -- for subclasses --------------------------------------------------------------------

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Kind-specific part of ``open``."""

    def _waiting(self) -> AbstractContextManager:
        """Around a wait: the thread's turn (when it takes turns) is given up meanwhile."""
        return self.turns.released() if self.turns is not None else nullcontext()

    def _play_until(self, due: float, stop: threading.Event) -> bool:
        """Real-time pacing: waits, giving up the thread's turn, until ``time.monotonic()``
        reaches ``due`` (when the audio read so far has played); True when ``stop`` is set."""
        wait_s = due - time.monotonic()
        if wait_s <= 0:
            return stop.is_set()
        with self._waiting():
            return stop.wait(wait_s)

    def _status(self, state: str, error: str | None = None, **extra) -> None:
        self._state = state
        self._on_status(state, error, extra)

    def _running_extra(self) -> dict:
        """Extra fields for the "running" status sent when audio (re)starts."""
        return {}

    def _require_open(self) -> Resampler:
        if self._resampler is None:
            raise SourceError(f"{self.description}: call open() before chunks()")
        return self._resampler

    def _channels_seen(self):
        """For ``mono_blocks``: where the channels of each decoded block are measured before
        they are averaged (None when loudness is not measured)."""
        loudness = self._loudness
        if loudness is None:
            return None
        resampler = self._require_open()

        def seen(planar: np.ndarray, rate: float, names: tuple[str, ...]) -> None:
            loudness.accept(planar, rate, resampler.samples_out, planar=True, names=names)

        return seen

    def _chunk(self, samples: np.ndarray, rate: float, arrival: float | None = None,
               measured: bool = False) -> AudioChunk | None:
        """Resamples (frames, channels) or mono input and wraps it; None when no output yet.
        ``measured``: its loudness was measured already (``_channels_seen``)."""
        resampler = self._require_open()
        if self._loudness is not None and not measured:
            self._loudness.accept(samples, rate, resampler.samples_out)
        out = resampler.process(samples, rate)
        if resampler.nonfinite:  # NaN and infinity made 0; beyond the limit, the limit
            self.counters["nonfinite"] = resampler.nonfinite
        if resampler.beyond_limit:
            self.counters["beyond_limit"] = resampler.beyond_limit
        return self._wrap(out, arrival)

    def _flush(self, arrival: float | None = None) -> AudioChunk | None:
        """The resampler's tail at the end of the input (or of one connection)."""
        if self._resampler is None:
            return None
        if self._loudness is not None:
            self._loudness.reset()  # what follows is another stretch of audio
        return self._wrap(self._resampler.flush(), arrival)

    def _end(self, **extra) -> Iterator[AudioChunk]:
        """A normal end (the input ended or ``stop`` was set): the resampler's tail, "ended"."""
        tail = self._flush()
        if tail is not None:
            yield tail
        self._status("ended", None, **extra)

    def _wrap(self, out: np.ndarray, arrival: float | None) -> AudioChunk | None:
        if out.size == 0:
            return None
        index = self._resampler.samples_out - out.size
        self.counters["chunks"] += 1
        self.counters["samples"] += int(out.size)
        if self._state != "running":
            self._status("running", None, **self._running_extra())
        loudness = self._loudness
        if loudness is not None and loudness.unmeasured_samples:  # a rate it cannot measure
            self.counters["loudness_unmeasured"] = loudness.unmeasured_samples
        return AudioChunk(out, index, time.monotonic() if arrival is None else arrival,
                          () if loudness is None else loudness.take())
