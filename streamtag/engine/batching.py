"""Streams, windows, cross-stream batching and back-pressure.

One ``Engine`` serves many light streams (the sherpa-onnx shape): each stream turns its audio into
frames with its own ``OnlineLogMel`` and cuts a window of W frames every H frames; the engine
stacks the due windows of *all* streams into batches, runs a turn of forward passes, then hands
each result back to its stream, in order, through its smoother to a sink. The single-stream case
is the batched case with one stream.

Back-pressure: a stream that is not live (a file, a pipe) waits in ``accept`` while it has
``max_pending_windows`` windows queued, so it goes exactly as fast as the engine; a live stream
(a device, a network stream) never waits: past that many, its oldest queued windows are dropped
and counted.

What follows from each scored window (levels, loudness, silence, content, smoothing, mood:
the ``WindowResult``) is the stream's ``WindowScorer`` (streamtag.engine.scoring); the engine
feeds each stream's content classifier (``[content]``, streamtag.engine.content) the samples
it frames, so that each window comes with its class; where silero-vad is installed
(streamtag.engine.speech) each turn first runs the speech detector on the waiting chunks of
every stream in it, together, and a window that is speech to it is speech.

The engine knows nothing of sockets: results go to an ``EngineSink``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from streamtag.engine.config import (
    ContentConfig,
    EngineConfig,
    HealthConfig,
    MoodConfig,
    SmoothingConfig,
)
from streamtag.engine.content import MUSIC, SPEECH, ContentNetworks, ContentTracker
from streamtag.engine.health import SilenceEvent
from streamtag.engine.mood import MoodPlan, MoodTable
from streamtag.engine.plan import ServingPlan
from streamtag.engine.scoring import WindowResult, WindowScorer
from streamtag.engine.smoothing import TagEvent
from streamtag.engine.speech import SPEECH_SHARE, SpeechPlan, SpeechTrack, run_tracks
from streamtag.frontend import FrameRing, OnlineLogMel, WindowLevel
from streamtag.model.inference import InferenceModel, return_freed_memory
from streamtag.model.window_reuse import WindowReuse

log = logging.getLogger(__name__)

# A worker's turn: where more windows are queued than one forward pass takes, it takes up to
# TURN_WINDOWS of them, runs them in passes of ``batch_limit`` and only then hands the results
# out. The turn's own work (waking, taking the windows, the hand-out in order, and above all the
# caches each forward evicts, which the first scoring after it pays for) is then shared by every
# window of the turn while the forward keeps its cheapest size (docs/benchmarks/, "turns
# of forward passes"). A turn takes only windows already queued, and the first of them then
# waits for the turn's later passes no longer than the last of them waited before;
# TURN_FORWARD_S bounds that wait, a quarter of the usual one-second hop.
TURN_WINDOWS = 8
TURN_FORWARD_S = 0.25

__all__ = ["Engine", "EngineConfig", "EngineSink", "WindowResult"]


class EngineSink(Protocol):
    """Where results go: every call the engine makes on its sink. A class that subclasses it
    takes the defaults of the last two (no hold on a turn, silence ends ignored)."""

    def on_window(self, result: WindowResult) -> None:
        """One scored window, in its stream's order."""
        ...

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        """The stream's last window is out: its closing tag events, and where it ended."""
        ...

    def on_silence_end(self, stream_id: str, changes: list[SilenceEvent]) -> None:
        """The silence under way when a stream ended, ended (just before ``on_stream_end``)."""

    def turn(self) -> AbstractContextManager[object]:
        """What the engine enters around each turn's hand-out (the daemon holds its publishing
        there, so that a turn's messages leave in one burst)."""
        return contextlib.nullcontext()


@dataclasses.dataclass
class _Window:
    stream: _Stream
    generation: int
    data: np.ndarray  # (n_mels, W) for log-mel models, (W,) for waveform models
    start_sample: int
    end_sample: int
    arrival: float
    # the frame after its last in its stream (window reuse finds the carry it takes by it);
    # None for a window that is not the stream's frames as they stand (a short input repeated)
    end_frame: int | None = None
    dropped: bool = False
    level: WindowLevel | None = None  # the frontend's, of its frames, for log-mel models
    # ... of its last hop's frames: the audio that came since the window before
    newest: WindowLevel | None = None
    # cut at the end of the input: its last frames may be the frontend's end padding
    tail: bool = False
    content: str | None = None  # the content classifier's class, None where none ran


@dataclasses.dataclass
class _Pass:
    """One forward pass of a turn: its windows and their probabilities (None: it failed)."""

    windows: list[_Window]
    probs: np.ndarray | None
    seconds: float


# A window as the framer cuts it: (data, start sample, end sample, end frame or None, the level
# of its frames and of its last hop's, or None)
_Cut = tuple[np.ndarray, int, int, int | None, WindowLevel | None, WindowLevel | None]


class _Framer:
    """Samples in, due windows out, for one stream and one model input (frames or samples).

    Windows end at W, W + H, W + 2H, ... (frames, or samples for waveform models). At the end
    of the input one more window, aligned to the last frame, scores the audio after the last
    regular window; an input shorter than one window is wrap-padded to a window.
    """

    def __init__(self, model: InferenceModel, hop: int, sample_offset: int) -> None:
        self.window = model.window
        self.hop = hop
        self.sample_offset = sample_offset  # stream sample index of this framer's sample 0
        self.logmel = model.input_kind == "logmel"
        if self.logmel:
            o = model.frontend
            self.fe: OnlineLogMel | None = OnlineLogMel(o)
            self.hop_length = o.hop_length
            self.pad = o.n_fft // 2 if o.center else 0
            self.n_fft = o.n_fft
            width = o.n_mels
        else:
            self.fe = None
            self.hop_length, self.pad, self.n_fft, width = 1, 0, 1, 1
        self.capacity = self.window + 4 * hop
        self.ring = FrameRing(self.capacity, width)
        if self.fe is not None:
            # The level of each window's audio, from what the frontend measured per frame.
            self.fe.keep_levels(2 * self.capacity)
        self.next_end = self.window
        self.samples = 0

    def _span(self, begin: int, end: int) -> tuple[int, int]:
        """Samples covered by frames [begin, end), clipped to the audio."""
        first = max(0, begin * self.hop_length - self.pad)
        last = min(self.samples, (end - 1) * self.hop_length - self.pad + self.n_fft)
        return self.sample_offset + first, self.sample_offset + max(first, last)

    def _cut(self, end: int, length: int) -> np.ndarray:
        w = self.ring.window(end, length, transpose=True)
        return w if self.logmel else w[0]

    def _level(self, end: int, length: int) -> WindowLevel | None:
        return None if self.fe is None else self.fe.window_level(end, length)

    def _levels(self, end: int, length: int) -> tuple[WindowLevel | None, WindowLevel | None]:
        """The level of frames [end - length, end) and of the last hop of them (at least a
        level step: a window's level takes whole steps)."""
        if self.fe is None:
            return None, None
        newest = min(max(self.hop, self.fe.level_step), length)
        return self._level(end, length), self._level(end, newest)

    def _push(self, frames: np.ndarray, out: list[_Cut]) -> None:
        room = self.capacity - self.window  # push no more than can be cut before overwriting
        for i in range(0, len(frames), room):
            self.ring.push(frames[i: i + room])
            while self.ring.end_index >= self.next_end:
                end = self.next_end
                out.append((self._cut(end, self.window), *self._span(end - self.window, end),
                            end, *self._levels(end, self.window)))
                self.next_end += self.hop

    def accept(self, samples: np.ndarray) -> list[_Cut]:
        """The windows due with ``samples``: (window, start sample, end sample, end frame)."""
        self.samples += len(samples)
        out: list[_Cut] = []
        if self.fe is not None:
            # In pieces of at most the frames the ring takes between cuts, so that the frontend
            # still keeps the levels of every window cut (the frames are the same in any
            # chunking, bitwise).
            step = (self.capacity - self.window) * self.hop_length
            for i in range(0, len(samples), step):
                self.fe.accept_waveform(samples[i: i + step])
                self._push(self.fe.pop(), out)
        else:
            self._push(np.asarray(samples, dtype=np.float32).reshape(-1, 1), out)
        return out

    def finish(self) -> list[_Cut]:
        out: list[_Cut] = []
        if self.fe is not None:
            self.fe.input_finished()
            self._push(self.fe.pop(), out)
        total = self.ring.end_index
        last_end = self.next_end - self.hop
        if total >= self.window and total > last_end:
            out.append((self._cut(total, self.window), *self._span(total - self.window, total),
                        total, *self._levels(total, self.window)))
        elif 0 < total < self.window:
            short = self._cut(total, total)
            reps = -(-self.window // total)
            tiled = np.concatenate([short] * reps, axis=-1)[..., : self.window]
            out.append((np.ascontiguousarray(tiled), *self._span(0, total), None,
                        *self._levels(total, total)))
        return out


def _stacked(windows: Sequence[_Window]) -> np.ndarray:
    """The windows' data as one batch; one window is its own batch of one, without a copy."""
    return (windows[0].data[np.newaxis] if len(windows) == 1
            else np.stack([w.data for w in windows]))


def cut_windows(model: InferenceModel, chunks: Iterable[np.ndarray],
                hop: int | None = None) -> Iterator[np.ndarray]:
    """The windows the engine would score for one stream of mono chunks at the model's rate
    (``hop``: the model file's when None), in order, the end's window included."""
    framer = _Framer(model, hop or model.hop, 0)
    for chunk in chunks:
        for cut in framer.accept(np.asarray(chunk, dtype=np.float32)):
            yield cut[0]
    for cut in framer.finish():
        yield cut[0]


class _Stream:
    def __init__(self, stream_id: str, live: bool, framer: _Framer, scorer: WindowScorer,
                 content: ContentTracker | None = None,
                 speech: SpeechTrack | None = None) -> None:
        self.id = stream_id
        self.content = content
        self.speech = speech
        self.live = live
        self.framer = framer
        self.scorer = scorer  # what follows from each scored window, in order
        self.lock = threading.Lock()  # one feeder at a time
        self.pending = 0  # windows queued or being scored
        self.samples = 0
        self.finished = False
        self.closed = False
        # window reuse: the carry each scored window left, by its end frame (the later
        # windows that take one look it up by theirs less the reuse's lag)
        self.carries: dict[int, np.ndarray] = {}
        self.counters = {"samples": 0, "windows": 0, "dropped_windows": 0, "nonfinite": 0,
                         "nonfinite_windows": 0}


class Engine:
    """Cross-stream batched tagging with one model.

    ``start()`` runs ``config.workers`` inference threads; each takes a turn of windows and runs
    its forward passes (of ``batch_limit`` windows) while the others run theirs (the model's
    backend releases the GIL), and the results go to the streams in the order the turns were
    taken, so every stream's windows reach the sink in order. Without ``start()``, ``drain()``
    scores the queued windows in the caller's thread (offline use).
    """

    def __init__(self, model: InferenceModel, sink: EngineSink,
                 config: EngineConfig | None = None,
                 smoothing: SmoothingConfig | None = None,
                 mood: MoodConfig | None = None,
                 health: HealthConfig | None = None,
                 content: ContentConfig | None = None,
                 speech: SpeechPlan | None = None) -> None:
        """``speech``: who decides speech with ``[content]`` on; None: silero-vad from the
        model store where installed, else the content network (and a warning says so)."""
        self.config = config or EngineConfig()
        self.content = content or ContentConfig()
        self._content_model = ContentNetworks.load() if self.content.enabled else None
        self._speech = None
        if self.content.enabled:
            self._speech = speech or SpeechPlan.installed()
            if speech is None and self._speech.detector is None:  # a caller's plan, its say
                log.warning("content: %s", self._speech.note)
        self.smoothing = smoothing or SmoothingConfig()
        self.mood = mood or MoodConfig()
        self.health = health or HealthConfig()
        self._mood_table = MoodTable.load() if self.mood.enabled else None
        self.sink = sink
        self._model = model
        self._plan = self._decide(model)
        return_freed_memory()  # what the model's checks and measurement built and dropped
        self._pass_s: float | None = None  # the serving model's forward seconds per window
        self._generation = 0
        self._streams: dict[str, _Stream] = {}
        self._queue: deque[_Window] = deque()
        self._cond = threading.Condition()
        # Batches are numbered as they are taken and handed out in that order; a model swap
        # waits until none is in flight and lets no new one start meanwhile.
        self._next_ticket = 0
        self._dispatch_ticket = 0
        self._in_flight = 0
        self._swapping = False
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self.stats = {"turns": 0, "batches": 0, "windows": 0, "dropped_windows": 0,
                      "reused_windows": 0,  # windows that took an earlier window's carry
                      "failed_batches": 0,
                      "nonfinite_windows": 0, "forward_s": 0.0, "overhead_s": 0.0,
                      # CPU time of the scoring threads: in the forward, and in all of scoring
                      # (the rest: stacking, smoothing, results, the sink, i.e. publishing)
                      "forward_cpu_s": 0.0, "scoring_cpu_s": 0.0}
        # the speech detector's chunks run and the CPU time of the threads that ran them
        # (apart from ``stats``, the status reply's counters: a measure for benchmarks)
        self.speech_stats = {"chunks": 0, "cpu_s": 0.0}
        self.batch_sizes: deque[int] = deque(maxlen=4096)
        self.on_batch: Callable[[int, float], None] | None = None  # (size, forward seconds)

    # -- streams ---------------------------------------------------------------------------

    @property
    def model(self) -> InferenceModel:
        return self._model

    @property
    def plan(self) -> ServingPlan:
        """How the model serving now is served (decided when it was loaded)."""
        return self._plan

    @property
    def batch_limit(self) -> int:
        """Windows per forward pass, at most, for the model serving now."""
        return self._plan.batch_limit

    @property
    def turn_limit(self) -> int:
        """Windows a worker takes in one turn, at most: whole passes of ``batch_limit``, up to
        TURN_WINDOWS windows whose forwards take TURN_FORWARD_S or less (at the forward's
        wall time per window so far; one pass until the model's first has run)."""
        limit, per_window = self._plan.batch_limit, self._pass_s
        if per_window is None or limit >= TURN_WINDOWS:
            return limit
        passes = min(TURN_WINDOWS // limit,
                     int(TURN_FORWARD_S / max(per_window * limit, 1e-9)))
        return max(1, passes) * limit

    def _decide(self, model: InferenceModel) -> ServingPlan:
        return ServingPlan.decide(model, self.config, self._mood_table, self._content_model,
                                  self._speech)

    @property
    def speech_note(self) -> str | None:
        """Who decides speech, in words (None: ``[content]`` is off): silero-vad's graph, or
        the content network where it is not installed, with how to install it."""
        return None if self._speech is None else self._speech.note

    @property
    def mood_plan(self) -> MoodPlan | None:
        """The mood plan of the model serving now (None: moods are off)."""
        return self._plan.mood

    @property
    def window_reuse(self) -> WindowReuse | None:
        """The window reuse serving now, None where every window is computed whole."""
        return self._plan.reuse

    def add_stream(self, stream_id: str, live: bool = False) -> None:
        with self._cond:
            existing = self._streams.get(stream_id)
            # A closed stream (ended, every window out) may be replaced: a source re-added
            # under the id of one that ended or failed continues its stream.
            if existing is not None and not existing.closed:
                raise ValueError(f"a stream named {stream_id!r} already exists")
            model, plan = self._model, self._plan
            scorer = WindowScorer(stream_id, model, plan.mood, self.smoothing, self.health,
                                  self.mood, self.content)
            self._streams[stream_id] = _Stream(
                stream_id, live, _Framer(model, plan.hop, 0), scorer,
                None if plan.content is None else plan.content.tracker(),
                None if plan.content is None else plan.content.speech_track())

    def stream_ids(self) -> list[str]:
        with self._cond:
            return list(self._streams)

    def new_track(self, stream_id: str) -> None:
        """A new title on the stream: its genre line starts afresh (streamtag.engine.mood)."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.scorer.mood is not None:
            stream.scorer.mood.new_track()

    def stream_counters(self, stream_id: str) -> dict:
        """The stream's counts; with ``[health]`` also ``silent`` (0/1), ``silent_s``,
        ``silences`` and ``clipping_windows`` (streamtag.engine.health)."""
        stream = self._stream(stream_id)
        detector = stream.scorer.health
        health = {} if detector is None else detector.counters()
        return {**stream.counters, **health, "pending": stream.pending}

    def snapshot(self) -> dict[str, dict]:
        """Current smoothed scores and active tags of every stream, and with ``[health]`` its
        silence under way (``SilenceDetector.current``: None when not silent)."""
        with self._cond:
            streams = list(self._streams.values())
        out = {}
        for s in streams:
            smoother, health = s.scorer.smoother, s.scorer.health
            out[s.id] = {"tags": list(smoother.tags),
                         "smoothed": [float(v) for v in smoother.smoothed],
                         "active": smoother.active_tags(), "windows": s.counters["windows"]}
            if health is not None:
                out[s.id]["silence"] = health.current()
        return out

    def _stream(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise ValueError(f"no stream named {stream_id!r}") from None

    def accept(self, stream_id: str, samples: np.ndarray, arrival: float | None = None,
               wait: bool = True, loudness: Sequence[tuple[int, float]] = ()) -> None:
        """Feeds audio at the model's sample rate. Blocks a non-live stream while it has
        ``max_pending_windows`` windows queued (only while the worker runs); with ``wait``
        False the caller does that itself (``has_room``, ``wait_for_room``). ``loudness``: the
        source's loudness blocks completed with these samples, as (how many samples before
        the end of ``samples`` the block ends, its power); kept where ``[health] loudness``
        is on."""
        arrival = time.monotonic() if arrival is None else arrival
        stream = self._stream(stream_id)
        with stream.lock:
            if stream.finished:
                raise ValueError(f"stream {stream_id!r} has finished; add a new stream")
            with self._cond:
                framer, generation, content = stream.framer, self._generation, stream.content
            windows = framer.accept(samples)
            kinds = self._classify(content, windows, samples)
            if stream.speech is not None:
                stream.speech.accept(samples)
            stream.samples += len(samples)
            stream.counters["samples"] = stream.samples
            if loudness and stream.scorer.loudness is not None:
                stream.scorer.loudness.add((stream.samples - before, power)
                                    for before, power in loudness)
            if framer.fe is not None:
                stream.counters["nonfinite"] = framer.fe.nonfinite_samples
            self._enqueue(stream, generation, windows, arrival, kinds=kinds)
        if wait:
            self.wait_for_room(stream_id)

    def has_room(self, stream_id: str) -> bool:
        """False while a non-live stream has more than ``max_pending_windows`` queued."""
        stream = self._stream(stream_id)
        return stream.live or stream.pending <= self.config.max_pending_windows

    def wait_for_room(self, stream_id: str) -> None:
        """Blocks while ``has_room`` is False and the workers run (without workers, scores
        the queue in this thread)."""
        stream = self._stream(stream_id)
        limit = self.config.max_pending_windows
        if stream.live or stream.pending <= limit:
            return
        with self._cond:
            while (stream.pending > limit and self._workers and not self._stopping
                   and not stream.closed):
                self._cond.wait(0.5)
        if not self._workers and stream.pending > limit:
            self.drain()

    def finish_stream(self, stream_id: str) -> None:
        """End of a stream's input: its last frames are scored and its active tags turn off
        (``sink.on_stream_end``) once everything queued has been scored."""
        stream = self._stream(stream_id)
        with stream.lock:
            if stream.finished:
                return
            with self._cond:
                framer, generation, content = stream.framer, self._generation, stream.content
            windows = framer.finish()
            kinds = self._classify(content, windows, None)
            if stream.speech is not None:
                stream.speech.finish()
            self._enqueue(stream, generation, windows, time.monotonic(), finishing=True,
                          kinds=kinds)
        self._maybe_close(stream)

    def remove_stream(self, stream_id: str) -> None:
        """Forgets a stream at once; its queued windows are dropped."""
        with self._cond:
            stream = self._streams.pop(stream_id, None)
            if stream is None:
                raise ValueError(f"no stream named {stream_id!r}")
            for w in self._queue:
                if w.stream is stream and not w.dropped:
                    w.dropped = True
            stream.closed = True
            self._cond.notify_all()

    @staticmethod
    def _classify(content: ContentTracker | None, windows: Sequence[_Cut],
                  samples: np.ndarray | None) -> list[str | None]:
        """The content class of each window cut from ``samples`` (None: the input ended),
        fed to the stream's content frontend first."""
        if content is None:
            return [None] * len(windows)
        if samples is None:
            content.finish()
        else:
            content.accept(samples)
        return [content.classify(start, end) for _, start, end, *_ in windows]

    def _enqueue(self, stream: _Stream, generation: int,
                 windows: Sequence[_Cut], arrival: float, finishing: bool = False,
                 kinds: Sequence[str | None] = ()) -> None:
        with self._cond:
            for i, (data, start, end, end_frame, level, newest) in enumerate(windows):
                self._queue.append(_Window(stream, generation, data, start, end, arrival,
                                           end_frame, level=level, newest=newest,
                                           tail=finishing,
                                           content=kinds[i] if kinds else None))
                stream.pending += 1
            if finishing:
                stream.finished = True
            if stream.live:
                self._drop_oldest(stream)
            if windows or finishing:  # a chunk inside a window wakes nobody
                self._cond.notify_all()

    def _drop_oldest(self, stream: _Stream) -> None:
        excess = stream.pending - self.config.max_pending_windows
        for w in self._queue:
            if excess <= 0:
                break
            if w.stream is stream and not w.dropped:
                w.dropped = True
                stream.pending -= 1
                stream.counters["dropped_windows"] += 1
                self.stats["dropped_windows"] += 1
                excess -= 1

    # -- model -----------------------------------------------------------------------------

    def reload_model(self, path: str, device: str | None = None) -> InferenceModel:
        """Swaps the model between batches. A model with the same input (frontend, window)
        scores the windows already queued, so none is lost; one with a different input gets
        fresh frontends from each stream's current position (queued windows are dropped).
        An unloadable file raises ``ModelError`` and the old model keeps running."""
        new = InferenceModel.load(path, device=device or str(self._model.device),
                                  backend=self.config.backend, threads=self.config.threads,
                                  precision=self.config.precision)
        plan = self._decide(new)
        with self._cond:
            self._swapping = True
            while self._in_flight:
                self._cond.wait(0.5)
            old, old_plan = self._model, self._plan
            self._model, self._plan = new, plan
            self._pass_s = None
            same_input = new.same_input_as(old) and plan.hop == old_plan.hop
            if not same_input:
                self._generation += 1
            for s in self._streams.values():
                s.carries.clear()  # the old model's
                if not same_input:
                    s.framer = _Framer(new, plan.hop, s.samples)
                    if plan.content is not None and s.content is not None and \
                            s.content.options.sample_rate != new.sample_rate:
                        s.content = plan.content.tracker(s.samples)
                        s.speech = plan.content.speech_track(s.samples)
                s.scorer.serve(new, plan.mood, same_input)
            self._swapping = False
            self._cond.notify_all()
        log.info("model %s (%s) replaces %s", new.name, new.path, old.name)
        return new

    # -- scoring ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._workers:
            return
        self._stopping = False
        self._workers = [threading.Thread(target=self._run, name=f"streamtag-inference-{i}",
                                          daemon=True) for i in range(self.config.workers)]
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Scores everything queued, then stops the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)
        self._workers = []
        self.drain()

    def drain(self) -> int:
        """Scores every queued window in the caller's thread; returns how many."""
        done = 0
        while True:
            taken = self._take_turn(wait=False)
            if taken is None:
                return done
            done += self._score(*taken)

    def _run(self) -> None:
        while True:
            taken = self._take_turn(wait=True)
            if taken is None:
                return
            self._score(*taken)

    def _take_turn(self, wait: bool
                    ) -> tuple[int, list[_Window], InferenceModel, int, ServingPlan] | None:
        """The next turn's windows with its ticket, and the model, generation and plan that
        score them; None when stopping with nothing left (``wait``) or nothing is
        queued (not ``wait``). A worker waits up to ``max_wait_ms`` for one pass to fill, then
        takes what is queued up to ``turn_limit``."""
        cfg = self.config
        with self._cond:
            while self._swapping:
                self._cond.wait(0.5)
            if wait:
                while not self._live_queue() and not self._stopping:
                    self._cond.wait(0.5)
                if not self._live_queue():
                    return None  # stopping and nothing left
                deadline = time.monotonic() + cfg.max_wait_ms / 1000.0
                while len(self._queue) < self._plan.batch_limit and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                while self._swapping:
                    self._cond.wait(0.5)
            elif not self._live_queue():
                return None
            most = self.turn_limit
            windows: list[_Window] = []
            while self._queue and len(windows) < most:
                w = self._queue.popleft()
                if not w.dropped:
                    windows.append(w)
            ticket = self._next_ticket
            self._next_ticket += 1
            self._in_flight += 1
            return ticket, windows, self._model, self._generation, self._plan

    def _live_queue(self) -> bool:
        while self._queue and self._queue[0].dropped:
            self._queue.popleft()
        return bool(self._queue)

    def _score(self, ticket: int, turn: list[_Window], model: InferenceModel,
               generation: int, plan: ServingPlan) -> int:
        t_start, cpu_start = time.perf_counter(), time.thread_time()
        current = [w for w in turn if w.generation == generation]
        self._decide_speech(current)
        passes: list[_Pass] = []
        forward_cpu_s = 0.0
        limit = plan.batch_limit
        try:
            for first in range(0, len(current), limit):
                windows = current[first:first + limit]
                t0, cpu0 = time.perf_counter(), time.thread_time()
                try:
                    probs = self._forward(model, plan.reuse, windows)
                except Exception:  # noqa: BLE001 - a failing pass must not stop the engine
                    log.exception("forward pass failed for a batch of %d windows", len(windows))
                    probs = None
                passes.append(_Pass(windows, probs, time.perf_counter() - t0))
                forward_cpu_s += time.thread_time() - cpu0
            with self._cond:
                while self._dispatch_ticket != ticket:  # earlier turns go out first
                    self._cond.wait(0.5)
            self._hand_out(turn, passes, model, generation, t_start)
        finally:
            # Pass the turn on in order, also when this one failed before its turn came:
            # jumping the counter past an earlier turn still waiting would stall it for ever.
            with self._cond:
                while self._dispatch_ticket != ticket:
                    self._cond.wait(0.5)
                self._dispatch_ticket += 1
                self._in_flight -= 1
                self._cond.notify_all()
        for stream in {w.stream for w in turn}:
            self._maybe_close(stream)
        with self._cond:
            self.stats["forward_cpu_s"] += forward_cpu_s
            self.stats["scoring_cpu_s"] += time.thread_time() - cpu_start
        return len(turn)

    def _decide_speech(self, windows: list[_Window]) -> None:
        """Runs the speech detector on the chunks waiting in every stream, all streams
        together (for the windows of this turn), then calls speech each window whose chunks
        are speech enough, over the network's call (silence and tones by the level stay
        theirs: the scorer decides those first)."""
        detector = None if self._speech is None else self._speech.detector
        if detector is None:
            return
        if not any(w.stream.speech is not None for w in windows):
            return
        # every stream's waiting steps, not only this turn's: a turn holds a few windows
        # (TURN_WINDOWS at batch 1) and the detector's cost per chunk falls with its batch
        with self._cond:
            tracks = [s.speech for s in self._streams.values()
                      if s.speech is not None and not s.closed]
        cpu0 = time.thread_time()
        # each stream's chunks in order, whichever worker runs them, and read as they stand
        with detector.lock:
            chunks = run_tracks(detector, tracks)
            shares = [None if w.stream.speech is None or w.content is None
                      else w.stream.speech.share(w.start_sample, w.end_sample)
                      for w in windows]
            # a voice that holds its notes is singing (streamtag.engine.singing)
            sung = [share is not None and share >= SPEECH_SHARE
                    and w.stream.speech is not None and w.stream.speech.sung(w.end_sample)
                    for w, share in zip(windows, shares, strict=True)]
        for w, share, is_sung in zip(windows, shares, sung, strict=True):
            if share is not None and share >= SPEECH_SHARE:
                w.content = MUSIC if is_sung else SPEECH
        with self._cond:
            self.speech_stats["chunks"] += chunks
            self.speech_stats["cpu_s"] += time.thread_time() - cpu0

    def _forward(self, model: InferenceModel, reuse: WindowReuse | None,
                 windows: list[_Window]) -> np.ndarray:
        """One pass's probabilities. With window reuse, the windows whose stream holds the
        carry they take run the reuse's ``next`` step on it, the others its ``first``, and
        each leaves its own carry for the window ``lag`` after it."""
        if reuse is None:
            return model.forward(_stacked(windows))
        lag = reuse.lag_frames
        taken = [None if w.end_frame is None else w.stream.carries.get(w.end_frame - lag)
                 for w in windows]
        probs = np.empty((len(windows), len(model.tags)), np.float32)
        for with_carry in (False, True):
            chosen = [i for i, c in enumerate(taken) if (c is not None) == with_carry]
            if not chosen:
                continue
            stacked = _stacked([windows[i] for i in chosen])
            if with_carry:
                carried = [c for c in taken if c is not None]  # the chosen, in order
                out, carries = reuse.next(stacked, np.stack(carried))
                self.stats["reused_windows"] += len(chosen)
            else:
                out, carries = reuse.first(stacked)
            probs[chosen] = out
            for i, carry in zip(chosen, carries, strict=True):
                w = windows[i]
                if w.end_frame is not None:
                    self._keep_carry(w.stream, w.end_frame, carry, lag)
        return probs

    @staticmethod
    def _keep_carry(stream: _Stream, end_frame: int, carry: np.ndarray, lag: int) -> None:
        """Keeps a window's carry for the window ``lag`` frames after it, and lets go of those
        no later window can take (ending ``lag`` frames or more before this one)."""
        carries = stream.carries
        carries[end_frame] = carry
        for end in list(carries):  # a copy: another worker may add one meanwhile
            if end <= end_frame - lag:
                carries.pop(end, None)

    def _hand_out(self, turn: list[_Window], passes: list[_Pass], model: InferenceModel,
                  generation: int, t_start: float) -> None:
        """Results to their streams, in the turn's order (one turn at a time). The windows of
        a stale generation and of a failed pass are dropped and counted."""
        lost = [w for w in turn if w.generation != generation]
        lost += [w for p in passes if p.probs is None for w in p.windows]
        forward_s = sum(p.seconds for p in passes)
        with self._cond:
            self.stats["turns"] += bool(passes)
            self.stats["failed_batches"] += sum(p.probs is None for p in passes)
            for w in lost:
                w.stream.pending -= 1
                w.stream.counters["dropped_windows"] += 1
                self.stats["dropped_windows"] += 1
        for p in passes:
            if p.probs is None:
                continue
            self.stats["batches"] += 1
            self.batch_sizes.append(len(p.windows))
            if self.on_batch is not None:
                self.on_batch(len(p.windows), p.seconds)
            per_window = p.seconds / len(p.windows)
            self._pass_s = per_window if self._pass_s is None else (
                0.8 * self._pass_s + 0.2 * per_window)
        with self.sink.turn():
            for p in passes:
                if p.probs is not None:
                    for w, probs in zip(p.windows, p.probs, strict=True):
                        self._dispatch(w, probs, model)
        self.stats["forward_s"] += forward_s
        self.stats["overhead_s"] += time.perf_counter() - t_start - forward_s

    def _dispatch(self, w: _Window, probs: np.ndarray, model: InferenceModel) -> None:
        stream = w.stream
        if not np.isfinite(probs).all():
            # NaN/Inf scores (features that overflowed, a model that misbehaves) would poison
            # the smoother for good and cannot be published: that window alone is skipped.
            with self._cond:
                stream.pending -= 1
                stream.counters["nonfinite_windows"] += 1
                self.stats["nonfinite_windows"] += 1
            if stream.counters["nonfinite_windows"] == 1:
                log.warning("stream %s: the model gave non-finite scores for the window ending "
                            "at sample %d; such windows are skipped and counted in "
                            "nonfinite_windows", stream.id, w.end_sample)
            return
        result = stream.scorer.score(w, probs, model)
        stream.counters["windows"] += 1
        self.stats["windows"] += 1
        with self._cond:
            stream.pending -= 1
        if stream.closed:
            return
        try:
            self.sink.on_window(result)
        except Exception:  # noqa: BLE001 - a failing sink must not stop the engine
            log.exception("sink failed on window %d of stream %s", result.index, stream.id)

    def _maybe_close(self, stream: _Stream) -> None:
        with self._cond:
            if not stream.finished or stream.pending > 0 or stream.closed:
                return
            stream.closed = True
            stream.carries.clear()
        end_s = max(stream.scorer.end_s, stream.samples / self._model.sample_rate)
        events, silence = stream.scorer.close(end_s)
        try:
            if silence:
                self.sink.on_silence_end(stream.id, silence)
            self.sink.on_stream_end(stream.id, events, end_s)
        except Exception:  # noqa: BLE001
            log.exception("sink failed at the end of stream %s", stream.id)
