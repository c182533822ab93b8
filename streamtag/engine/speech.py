"""Speech by a detector trained on real speech: silero-vad's ONNX graph, batched across streams.

The content classifier's small network (streamtag.engine.content) was fitted on synthesised
voices and calls most recorded ones music; silero-vad (MIT, trained on thousands of hours of
real speech in many languages) tells a voice from music and noise at any level. Its graph is
taken from silero-vad's wheel on the user's machine (``streamtag models install speech``, which
``install music`` runs too: streamtag.catalog.speech_import) into the model store as
``SPEECH_FILE``, beside a record of where it came from; only a graph whose SHA-256 is one of
``KNOWN_GRAPHS`` is loaded (a model file is code). Without it the network decides speech as
before, and the engine says so (``SpeechPlan.note``).

The graph reads 16-kHz mono in chunks of 512 samples (32 ms) after the 64 samples before them,
and carries a recurrent state of (2, streams, 128) from chunk to chunk. It runs on the last
chunk of every ``STEP`` (64 ms: one chunk in two), its state carried from step to step and reset
every ``RESET_STEPS``: a window's decision needs its share of speech, not every chunk's
probability, and one chunk in two costs half. Fewer do not hold: at one chunk in four the state,
carried through a minute of music, held a voice back for 5-9 s, and General MIDI's organ and
strings were speech in up to half their windows (docs/models.md, "Content"). The graph's own
STFT is replaced by numpy's FFT (``SpeechDetector``). Each stream has a ``SpeechTrack``: its
samples resampled to 16 kHz where the model's rate differs (one soxr stream, made only then),
its samples waiting, its state and the speech probability of its recent steps. ``run_tracks``
runs the waiting steps of many streams together: one ``session.run`` per step for every stream
with a step waiting, as the tagger stacks windows. A window is speech when at least
``SPEECH_SHARE`` of its steps have a probability over ``THRESHOLD`` (docs/models.md, "Content",
has the measurements that chose both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamtag import places
from streamtag.errors import ModelError
from streamtag.fsutil import NotOursError, read_own_file

__all__ = ["CHUNK", "CONTEXT", "KNOWN_GRAPHS", "SPEECH_FILE", "STEP", "SPEECH_RATE", "SPEECH_SHARE",
           "THRESHOLD", "SpeechDetector", "SpeechPlan", "SpeechTrack", "run_tracks",
           "speech_path"]

SPEECH_RATE = 16000
CHUNK = 512  # samples per probability: 32 ms
CONTEXT = 64  # samples of the chunk before, which silero v5 and later read with each chunk
STRIDE = 2  # chunks per step, the step's last one run (its context within the step)
STEP = STRIDE * CHUNK
STATE = 128
# silero's STFT (``split_graph``): each row reflected this far past its end, frames of
# FFT_SIZE every FFT_HOP
FFT_SIZE = 256
FFT_HOP = 128
FFT_PAD = 64
MAGNITUDE = "magnitude"  # the split graph's input: (streams, FFT_SIZE // 2 + 1, frames)
# A chunk is speech over silero's own default threshold, and a window is speech when this share
# of its chunks is: voices pause between words and phrases, so a talking window is rarely
# all speech, while music with a voice in it seldom holds the detector for long.
THRESHOLD = 0.5
SPEECH_SHARE = 0.4
MIN_STEPS = 5  # a window with fewer steps (half a second) is left to the network
# Each stream's state goes back to zeros every this many steps (8 s): carried through minutes
# of music, the state holds the detector back when a voice comes (a voice after a minute of
# music was speech 3.1 s into it at the median and 4.9 s at worst, against 2.0 and 2.7 s with
# the reset; benchmarks/speech_stride.py, docs/models.md "Content")
RESET_STEPS = 125
KEEP_S = 32.0  # the steps' probabilities kept per stream: windows wait in the queue that long
MAX_WAITING = round(KEEP_S * SPEECH_RATE)  # samples waiting for the detector, at most
SPEECH_FILE = "silero-vad.onnx"
RECORD_FILE = "silero-vad.json"
MAX_GRAPH_BYTES = 16 * 1024 * 1024
# The graphs streamtag loads, by SHA-256 of the file: what each is.
KNOWN_GRAPHS = {
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3":
        "silero-vad 6.2.3 (silero_vad/data/silero_vad.onnx)",
}


def speech_path() -> Path:
    """Where the installed graph lives: the model store (``$STREAMTAG_HOME/models``)."""
    return places.home() / "models" / SPEECH_FILE


def record_path() -> Path:
    return places.home() / "models" / RECORD_FILE


class SpeechDetector:
    """silero-vad's graph in an ONNX Runtime session of one thread (the engine's threads run
    one session each; more threads would only share the same small matrices).

    The graph opens with its own short-time Fourier transform, a convolution of 258 windowed
    cosines and sines over the chunk: a third of the graph's time, for what an FFT does in a
    tenth of it. So the graph is served from the magnitudes on (``split_graph``), and
    ``magnitudes`` computes them with numpy's FFT from the window the graph's basis holds;
    the probabilities are the whole graph's within float rounding (tests/engine/test_speech.py).
    A graph that is not laid out as the known ones is served whole."""

    def __init__(self, graph: bytes, described: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the graph's unused initialisers are not news
        self.described = described
        split = split_graph(graph)
        self.window: np.ndarray | None = None
        if split is not None:
            graph, self.window = split
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        wanted = {MAGNITUDE, "state"} if split is not None else {"input", "state", "sr"}
        if not wanted - {"sr"} <= names or not names <= wanted:
            raise ModelError(f"{described}: the graph's inputs are {sorted(names)}, not "
                             "silero-vad's input, state and sr")
        self._rate = ({"sr": np.array(SPEECH_RATE, np.int64)} if "sr" in names else {})
        self.lock = threading.Lock()  # the state of every track moves under it, in order

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SpeechDetector:
        """The graph at ``path`` when it is this user's file and one of ``KNOWN_GRAPHS``;
        ModelError saying what is wrong otherwise."""
        path = Path(path)
        try:
            graph = read_own_file(path, MAX_GRAPH_BYTES, private=False,
                                  what="silero-vad's graph")
        except (NotOursError, ValueError, OSError) as error:
            raise ModelError(str(error)) from None
        digest = hashlib.sha256(graph).hexdigest()
        described = KNOWN_GRAPHS.get(digest)
        if described is None:
            raise ModelError(f"{path}: sha256 {digest} is not a silero-vad graph streamtag knows "
                             "(a model file is code); reinstall it with `streamtag models "
                             "install speech`")
        return cls(graph, described)

    def run(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speech probabilities of ``rows`` (streams, CONTEXT + CHUNK) and the next state,
        from ``state`` (2, streams, STATE)."""
        if self.window is None:
            feeds = {"input": rows, "state": state, **self._rate}
        else:
            feeds = {MAGNITUDE: magnitudes(rows, self.window), "state": state}
        probs, state = self.session.run(None, feeds)
        return probs[:, 0], state


def magnitudes(rows: np.ndarray, window: np.ndarray) -> np.ndarray:
    """What silero's STFT gives for ``rows`` (streams, CONTEXT + CHUNK): each row reflected
    ``FFT_PAD`` samples past its end, frames of ``FFT_SIZE`` every ``FFT_HOP`` under
    ``window``, the magnitude of each frame's FFT: (streams, FFT_SIZE // 2 + 1, frames)."""
    padded = np.empty((len(rows), CONTEXT + CHUNK + FFT_PAD), np.float32)
    padded[:, : CONTEXT + CHUNK] = rows
    padded[:, CONTEXT + CHUNK:] = rows[:, -2: -FFT_PAD - 2: -1]  # reflected: the end not again
    frames = np.lib.stride_tricks.sliding_window_view(padded, FFT_SIZE, axis=1)[:, ::FFT_HOP]
    spectrum = np.fft.rfft(frames * window, axis=-1)
    return np.abs(spectrum).astype(np.float32).transpose(0, 2, 1)


def split_graph(graph: bytes) -> tuple[bytes, np.ndarray] | None:
    """silero-vad's 16-kHz graph from the STFT's magnitudes on, with the window of its STFT,
    or None where ``graph`` is not laid out as the known ones are: a top-level ``If`` on the
    rate whose branch for 16 kHz pads the input by reflection, convolves it with a basis of
    windowed cosines and sines (a ``Constant`` named ``...forward_basis_buffer``) and takes the
    ``Sqrt`` of their squares. The branch's nodes after the ``Sqrt`` become the graph, reading
    ``MAGNITUDE`` where they read the ``Sqrt``; every other constant is kept."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load_from_string(graph)
        top = [n for n in model.graph.node if n.op_type == "If"]
        rate = [numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                if n.op_type == "Constant"]
        if len(top) != 1 or len(rate) != 1 or int(rate[0]) != SPEECH_RATE:
            return None
        branch = next(a.g for a in top[0].attribute if a.name == "then_branch")
        nodes = list(branch.node)
        roots = [i for i, n in enumerate(nodes) if n.op_type == "Sqrt"]
        bases = [n for n in nodes if n.op_type == "Constant"
                 and n.output[0].endswith("forward_basis_buffer")]
        pads = [n for n in nodes if n.op_type == "Pad"]
        convs = [n for n in nodes[:roots[0]] if n.op_type == "Conv"] if roots else []
        if len(roots) != 1 or len(bases) != 1 or len(pads) != 1 or len(convs) != 1:
            return None
        basis = numpy_helper.to_array(bases[0].attribute[0].t)
        attributes = {a.name: helper.get_attribute_value(a) for a in convs[0].attribute}
        mode = {a.name: helper.get_attribute_value(a) for a in pads[0].attribute}.get("mode")
        window = basis[0, 0].astype(np.float32)
        bins = FFT_SIZE // 2 + 1
        n = np.arange(FFT_SIZE)
        angles = 2 * np.pi * np.outer(np.arange(bins), n) / FFT_SIZE
        if (basis.shape != (2 * bins, 1, FFT_SIZE) or attributes.get("strides") != [FFT_HOP]
                or mode != b"reflect"
                or np.abs(basis[:bins, 0] - window * np.cos(angles)).max() > 1e-5
                or np.abs(np.abs(basis[bins:, 0]) - np.abs(window * np.sin(angles))).max()
                > 1e-5):
            return None
        root = nodes[roots[0]].output[0]
        renamed = {root: MAGNITUDE, branch.output[0].name: "output",
                   branch.output[1].name: "stateN"}
        kept = []
        for i, node in enumerate(nodes):
            if i <= roots[0] and (node.op_type != "Constant" or node is bases[0]):
                continue
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for names in (copy.input, copy.output):
                for k, name in enumerate(names):
                    names[k] = renamed.get(name, name)
            kept.append(copy)
        frames = (CONTEXT + CHUNK + FFT_PAD - FFT_SIZE) // FFT_HOP + 1
        inputs = [helper.make_tensor_value_info(MAGNITUDE, onnx.TensorProto.FLOAT,
                                                ["streams", bins, frames]),
                  helper.make_tensor_value_info("state", onnx.TensorProto.FLOAT,
                                                [2, "streams", STATE])]
        outputs = [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT,
                                                 ["streams", 1]),
                   helper.make_tensor_value_info("stateN", onnx.TensorProto.FLOAT,
                                                 [2, "streams", STATE])]
        trimmed = helper.make_model(helper.make_graph(kept, "silero_vad_from_magnitudes",
                                                      inputs, outputs),
                                    opset_imports=model.opset_import)
        trimmed.ir_version = model.ir_version
        onnx.checker.check_model(trimmed)
    except (onnx.checker.ValidationError, ValueError, IndexError, StopIteration,
            AttributeError):
        return None
    return trimmed.SerializeToString(), window


_loaded: dict[tuple[str, int, int], SpeechDetector] = {}
_loaded_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SpeechPlan:
    """Who decides speech: the detector, or (None) the content network, with ``note`` saying
    why and what to do."""

    detector: SpeechDetector | None
    note: str

    @classmethod
    def installed(cls) -> SpeechPlan:
        """The detector in the model store; sessions are shared by every engine of the
        process while the file stays the same."""
        path = speech_path()
        try:
            status = path.stat()
        except OSError:
            return cls(None, "silero-vad is not installed: the content network decides speech "
                             "(it calls most recorded voices music); `streamtag models install "
                             "speech` installs the detector")
        key = (str(path), status.st_size, status.st_mtime_ns)
        with _loaded_lock:
            detector = _loaded.get(key)
            if detector is None:
                try:
                    detector = SpeechDetector.from_file(path)
                except ModelError as error:
                    return cls(None, f"silero-vad is not usable ({error}): the content network "
                                     "decides speech")
                _loaded.clear()
                _loaded[key] = detector
        return cls(detector, f"speech by {detector.described}")

    def track(self, sample_rate: float, sample_offset: int = 0) -> SpeechTrack | None:
        return None if self.detector is None else SpeechTrack(sample_rate, sample_offset)


class SpeechTrack:
    """One stream's way into the detector: ``accept`` the samples the engine frames (at the
    model's ``sample_rate``), ``run_tracks`` runs what waits, ``share`` answers per window."""

    def __init__(self, sample_rate: float, sample_offset: int = 0) -> None:
        self.sample_rate = float(sample_rate)
        self.sample_offset = sample_offset  # stream sample of this track's sample 0
        # stream samples per step
        self.step_samples = STEP * self.sample_rate / SPEECH_RATE
        self.resampler = None
        if self.sample_rate != SPEECH_RATE:
            import soxr

            # low quality: the detector reads speech's band, far below the filter's roll-off
            self.resampler = soxr.ResampleStream(self.sample_rate, SPEECH_RATE, 1,
                                                 dtype="float32", quality="LQ")
        self._lock = threading.Lock()  # the feeder appends while a worker takes
        self._waiting: list[np.ndarray] = []
        self._waiting_n = 0
        self._skipped = 0  # whole steps let go of unrun, the oldest waiting
        self.state = np.zeros((2, STATE), np.float32)
        self.done = 0  # steps run so far
        self.probs: deque[float] = deque(maxlen=max(1, round(KEEP_S * SPEECH_RATE / STEP)))

    def accept(self, samples: np.ndarray, last: bool = False) -> None:
        samples = np.asarray(samples, np.float32)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=last)
        if len(samples):
            with self._lock:
                self._waiting.append(samples)
                self._waiting_n += len(samples)
                if self._waiting_n > MAX_WAITING:
                    self._let_go(self._waiting_n - MAX_WAITING)

    def _let_go(self, samples: int) -> None:
        """Drops the oldest ``samples`` waiting (rounded up to whole steps), counted as steps
        that are not speech: audio nobody ran (the engine stalled) is bounded like a queue."""
        steps = -(-samples // STEP)
        waiting = np.concatenate(self._waiting)[steps * STEP:]
        self._waiting = [waiting] if len(waiting) else []
        self._waiting_n = len(waiting)
        self._skipped += steps

    @property
    def waiting_samples(self) -> int:
        """Samples at the detector's rate waiting for ``run_tracks`` (at most MAX_WAITING)."""
        return self._waiting_n

    def finish(self) -> None:
        self.accept(np.zeros(0, np.float32), last=True)

    def take(self) -> np.ndarray:
        """The whole steps waiting, each as its last chunk after its context: (steps,
        CONTEXT + CHUNK)."""
        with self._lock:
            n = self._waiting_n // STEP
            skipped, self._skipped = self._skipped, 0
            if skipped:  # callers hold the detector's lock: done and probs move with it
                self.done += skipped
                self.probs.extend([0.0] * min(skipped, self.probs.maxlen or skipped))
            if n == 0:
                return np.zeros((0, CONTEXT + CHUNK), np.float32)
            waiting = np.concatenate(self._waiting) if len(self._waiting) > 1 \
                else self._waiting[0]
            rest = waiting[n * STEP:]
            self._waiting = [rest] if len(rest) else []
            self._waiting_n = len(rest)
        # a step's chunk and the context before it are its last CONTEXT + CHUNK samples
        return waiting[: n * STEP].reshape(n, STEP)[:, STEP - CHUNK - CONTEXT:].copy()

    def share(self, start_sample: int, end_sample: int) -> float | None:
        """The share of the steps inside stream samples ``[start_sample, end_sample)`` that
        are speech, over those run and kept; None where fewer than ``MIN_STEPS`` are."""
        first = math.ceil((start_sample - self.sample_offset) / self.step_samples)
        end = math.floor((end_sample - self.sample_offset) / self.step_samples)
        kept_from = self.done - len(self.probs)
        first, end = max(first, kept_from), min(end, self.done)
        if end - first < MIN_STEPS:
            return None
        probs = np.fromiter((self.probs[i - kept_from] for i in range(first, end)), np.float64,
                            count=end - first)
        return float(np.count_nonzero(probs > THRESHOLD)) / (end - first)


def run_tracks(detector: SpeechDetector, tracks: Sequence[SpeechTrack]) -> int:
    """Runs every step waiting in ``tracks``, each stream's in order and every stream's
    ``k``-th step in one ``session.run``; returns the chunks run. Callers hold
    ``detector.lock`` so that two threads never move one stream's state at once."""
    taken = [(track, rows) for track in tracks for rows in (track.take(),) if len(rows)]
    if not taken:
        return 0
    taken.sort(key=lambda pair: -len(pair[1]))  # the streams with a k-th step come first
    steps, count = len(taken[0][1]), len(taken)
    rows = np.zeros((steps, count, CONTEXT + CHUNK), np.float32)
    for i, (_, own) in enumerate(taken):
        rows[: len(own), i] = own
    lengths = np.array([len(own) for _, own in taken])
    state = np.ascontiguousarray(np.stack([track.state for track, _ in taken], axis=1))
    probs = np.zeros((steps, count), np.float32)
    done = np.array([track.done for track, _ in taken])
    for k in range(steps):
        n = int(np.count_nonzero(lengths > k))
        state[:, :n][:, (done[:n] + k) % RESET_STEPS == 0] = 0.0
        p, new = detector.run(rows[k, :n], np.ascontiguousarray(state[:, :n]))
        probs[k, :n] = p
        state[:, :n] = new
    for i, (track, own) in enumerate(taken):
        track.state = state[:, i].copy()
        track.probs.extend(probs[: len(own), i].tolist())
        track.done += len(own)
    return int(lengths.sum())


def write_record(record: dict) -> None:
    """What the store says of the installed graph (catalog.speech_import writes it)."""
    from streamtag.fsutil import write_json_atomic

    write_json_atomic(record_path(), record)


def read_record() -> dict | None:
    try:
        data = json.loads(read_own_file(record_path(), 65536, private=False,
                                        what="silero-vad's record"))
    except (OSError, NotOursError, ValueError):
        return None
    return data if isinstance(data, dict) else None
