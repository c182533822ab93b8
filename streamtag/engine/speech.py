"""Speech by a detector trained on real speech: silero-vad's ONNX graph, batched across streams.

The content classifier's small network (streamtag.engine.content) reads fourteen hand-made
features, fitted on a few recorded and synthesised voices: it calls some isolated syllables
noise and some animals' calls speech. silero-vad (MIT, trained on thousands of hours of real
speech in many languages) tells a voice from music and noise at any level. Its graph is
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
strings were speech in up to half their windows (docs/models.md, "Content"). The graph is
served in two halves (``SpeechDetector``): what does not depend on the state (its STFT, by the
C++ core's FFT, and its convolutional encoder, as matrix products) for every waiting step of
every stream at once, then its recurrent decoder (an LSTM cell, in the C++ core) step by step,
every stream's together. Each stream has a ``SpeechTrack``: its samples resampled to 16 kHz
where the model's rate differs (one soxr stream, made only then), its samples waiting, its
state and the speech probability of its recent steps. ``run_tracks`` runs the waiting steps of
many streams together, as the tagger stacks windows. A window is speech when at least
``SPEECH_SHARE`` of its steps have a probability over ``THRESHOLD`` (docs/models.md, "Content",
has the measurements that chose both). The track also keeps the pitch of the steps that are
speech (``SpeechTrack.keep``), from which ``SpeechTrack.sung`` tells a voice that holds its
notes (streamtag.engine.singing): the engine calls such a window music.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamtag import _core, places
from streamtag.engine import singing
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
FRAMES = (CONTEXT + CHUNK + FFT_PAD - FFT_SIZE) // FFT_HOP + 1  # a step's STFT frames
MAGNITUDE = "magnitude"  # the split graph's input: (streams, FFT_SIZE // 2 + 1, FRAMES)
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
# Rows encoded in one run at most: the stateless half of many steps of many streams goes
# together (one call costs less per row than eight), within a few MB however long the queue
ENCODE_ROWS = 1024
KEEP_S = 32.0  # the steps' probabilities kept per stream: windows wait in the queue that long
MAX_WAITING = round(KEEP_S * SPEECH_RATE)  # samples waiting for the detector, at most
# Samples beyond this (24 dB over full scale) are held to it before the detector: a station's
# float samples of 1e30 made its STFT infinite and its state NaN until the state's reset
MAX_SAMPLE = 16.0
SPEECH_FILE = "silero-vad.onnx"
# What follows where the detector is not installed (SpeechPlan's note, `models list`)
WITHOUT_DETECTOR = ("the content network decides speech, less surely (it calls some isolated "
                    "syllables noise and some animals' calls speech)")
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
    tenth of it. So the graph is served from the magnitudes on (``split_graph``), and the C++
    core's ``ReflectedStft`` computes them (an FFT a frame, four frames at once) with the
    window the graph's basis holds; the probabilities are the whole graph's within float
    rounding (tests/engine/test_speech.py). From there it is cut after its encoder
    (``split_encoder``): the encoder, which reads one step alone, runs for many steps of many
    streams in one call, its 1-D convolutions as matrix products (``products_encoder``), and
    the decoder, which carries the state, runs step by step in the C++ core (``LSTMDecoder``).
    Each served part is checked against the graph's own as the detector loads and replaced by
    it where they differ; a graph that is not laid out as the known ones is served whole."""

    def __init__(self, graph: bytes, described: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the graph's unused initialisers are not news
        self.described = described
        split = split_graph(graph)
        self.window: np.ndarray | None = None
        self.stft: Any = None  # the C++ core's STFT with the graph's window, where split
        self.encoder = None  # the stateless half, from the magnitudes to the features
        self._input = "input"  # what the session ``decode`` runs reads
        if split is not None:
            graph, self.window = split
            self.stft = _core.ReflectedStft(self.window, CONTEXT + CHUNK, FFT_HOP, FFT_PAD)
            self._input = MAGNITUDE
            halves = split_encoder(graph)
            if halves is not None:
                encoder, graph, self._input = halves
                self.encoder = ort.InferenceSession(encoder, options,
                                                    providers=["CPUExecutionProvider"])
                products = products_encoder(encoder)
                if products is not None:
                    served = ort.InferenceSession(products, options,
                                                  providers=["CPUExecutionProvider"])
                    if _same_features(self.encoder, served):
                        self.encoder = served
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        wanted = {self._input, "state", "sr"}
        if not wanted - {"sr"} <= names or not names <= wanted:
            raise ModelError(f"{described}: the graph's inputs are {sorted(names)}, not "
                             "silero-vad's input, state and sr")
        self._rate = ({"sr": np.array(SPEECH_RATE, np.int64)} if "sr" in names else {})
        self.cell: LSTMDecoder | None = None
        if self.encoder is not None:
            self.cell = LSTMDecoder.from_graph(graph)
            if self.cell is not None and not self.cell.agrees(self._decode_graph):
                self.cell = None
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
        return self.decode(self.encode(rows), state)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """What does not depend on the state, for any number of ``rows`` (CONTEXT + CHUNK
        each) at once, steps of one stream among them: the encoder's features where the graph
        is split there, else the magnitudes, else the rows themselves."""
        if self.stft is None:
            return rows
        spectra = self.stft.magnitudes(rows)
        if self.encoder is None:
            return spectra
        features = self.encoder.run(None, {MAGNITUDE: spectra})[0]
        return features if self.cell is None else self.cell.project(features)

    def decode(self, encoded: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speech probabilities of one step of each stream, from its ``encode``d rows, and
        the next state, from ``state`` (2, streams, STATE)."""
        n = len(encoded)
        return self.decode_steps(encoded, [n], np.zeros(n, bool), state)

    def decode_steps(self, encoded: np.ndarray, counts: Sequence[int], reset: np.ndarray,
                     state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps in turn, the first ``counts[k]`` streams of ``state`` (2, streams, STATE)
        taking step ``k`` from their ``encode``d rows (step after step in ``encoded``), a row
        whose ``reset`` is set from a zero state: each row's probability and the next state."""
        if self.cell is not None:
            return self.cell.run(encoded, counts, reset, state)
        state = state.copy()
        probs, at = [], 0
        for n in counts:
            state[:, :n][:, reset[at: at + n]] = 0.0
            p, state[:, :n] = self._decode_graph(encoded[at: at + n],
                                                 np.ascontiguousarray(state[:, :n]))
            probs.append(p)
            at += n
        return np.concatenate(probs) if probs else np.zeros(0, np.float32), state

    def _decode_graph(self, encoded: np.ndarray,
                      state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, state = self.session.run(None, {self._input: encoded, "state": state,
                                               **self._rate})
        return probs[:, 0], state


class LSTMDecoder:
    """silero-vad's decoder, past its encoder: an LSTM cell of STATE units, a ReLU, a 1x1
    convolution to one output and a sigmoid. The graph runs it as some sixty small operators,
    slicing the cell's weights again at every call; here the input's product, which does not
    depend on the state, is made for every step at once in numpy (``project``), and the rest
    runs in the C++ core (``_core.LstmDecoder``: csrc/lstm_decoder.h), every waiting step of
    every stream in one call (``run``). Used only where it gives the graph's own probabilities
    and state (``agrees``)."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray,
                 w_out: np.ndarray, b_out: np.ndarray) -> None:
        # PyTorch's gates i, f, g, o taken as i, f, o, g: the three sigmoids side by side
        order = np.concatenate([np.arange(0, 2 * STATE), np.arange(3 * STATE, 4 * STATE),
                                np.arange(2 * STATE, 3 * STATE)])
        self.w_ih = np.ascontiguousarray(w_ih[order].T, np.float32)  # (inputs, 4 * STATE)
        self.bias = (b_ih + b_hh)[order].astype(np.float32)
        self.core = _core.LstmDecoder(np.ascontiguousarray(w_hh[order].T, np.float32),
                                      np.ascontiguousarray(w_out.reshape(STATE), np.float32),
                                      float(b_out.reshape(())))

    @classmethod
    def from_graph(cls, graph: bytes) -> LSTMDecoder | None:
        """The weights of the decoder graph ``split_encoder`` made, found by the names silero
        gives them (``decoder.rnn.weight_ih`` ...), with PyTorch's LSTMCell layout; None where
        any is missing or of another shape."""
        import onnx
        from onnx import numpy_helper

        shapes = {"decoder.rnn.weight_ih": (4 * STATE, None), "decoder.rnn.weight_hh":
                  (4 * STATE, STATE), "decoder.rnn.bias_ih": (4 * STATE,),
                  "decoder.rnn.bias_hh": (4 * STATE,), "decoder.decoder.2.weight": (1, STATE, 1),
                  "decoder.decoder.2.bias": (1,)}
        model = onnx.load_from_string(graph)
        found: dict[str, np.ndarray] = {}
        for node in model.graph.node:
            if node.op_type == "Constant":
                for suffix in shapes:
                    if node.output[0].endswith(suffix):
                        found[suffix] = numpy_helper.to_array(node.attribute[0].t)
        for name, shape in shapes.items():
            got = found.get(name)
            if got is None or len(got.shape) != len(shape) or any(
                    want not in (None, have) for want, have in zip(shape, got.shape,
                                                                     strict=True)):
                return None
        return cls(*(found[name] for name in shapes))

    def project(self, features: np.ndarray) -> np.ndarray:
        """The input's share of the gates, with both biases, for features (rows, inputs, 1)."""
        return features.reshape(len(features), -1) @ self.w_ih + self.bias

    def run(self, projected: np.ndarray, counts: Sequence[int], reset: np.ndarray,
            state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps in turn, the first ``counts[k]`` streams taking step ``k``; ``projected``
        holds their rows step after step, and a row whose ``reset`` is set starts from zeros:
        each row's probability and the next state (2, streams, STATE)."""
        return self.core.run(projected, np.asarray(counts, np.int64),
                             np.asarray(reset, np.uint8), state)

    def agrees(self, graph_step: Callable[[np.ndarray, np.ndarray],
                                          tuple[np.ndarray, np.ndarray]],
               streams: int = 5, steps: int = 4) -> bool:
        """Whether ``run`` gives ``graph_step``'s probabilities and state (within 1e-4) over a
        few steps of random features and state, a step at a time."""
        rng = np.random.default_rng(0)
        inputs = self.w_ih.shape[0]
        features = rng.uniform(0.0, 2.0, (steps, streams, inputs, 1)).astype(np.float32)
        ours = theirs = rng.uniform(-1.0, 1.0, (2, streams, STATE)).astype(np.float32)
        for k in range(steps):
            p, ours = self.run(self.project(features[k]), [streams], np.zeros(streams, bool),
                               ours)
            q, theirs = graph_step(features[k], theirs)
            if (np.abs(p - q).max() > 1e-4 or np.abs(ours - theirs).max() > 1e-4):
                return False
        return True



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
        inputs = [helper.make_tensor_value_info(MAGNITUDE, onnx.TensorProto.FLOAT,
                                                ["streams", bins, FRAMES]),
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



def split_encoder(graph: bytes) -> tuple[bytes, bytes, str] | None:
    """``split_graph``'s graph in two at the end of its encoder: the graph's leading
    convolutions and ReLUs, which read the magnitudes alone (the encoder, run for many steps
    at once), and the rest, the recurrent decoder, reading the encoder's last output and the
    state; with that output's name. None where the graph does not open with convolutions whose
    last output alone the rest reads."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load_from_string(graph)
        nodes = list(model.graph.node)
        constants = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
        working = [n for n in nodes if n.op_type != "Constant"]
        head = 0
        while head < len(working) and working[head].op_type in ("Conv", "Relu"):
            head += 1
        encoder, decoder = working[:head], working[head:]
        if not encoder or encoder[0].input[0] != MAGNITUDE:
            return None
        features = encoder[-1].output[0]
        made = {out for n in encoder for out in n.output}
        read = _names_read(decoder)
        if read & made != {features} or MAGNITUDE in read:
            return None

        def half(kept: list, name: str, inputs: list, outputs: list) -> bytes:
            wanted = _names_read(kept)
            graph_ = helper.make_graph([n for c, n in constants.items() if c in wanted] + kept,
                                       name, inputs, outputs,
                                       initializer=list(model.graph.initializer))
            made_model = helper.make_model(graph_, opset_imports=model.opset_import)
            made_model.ir_version = model.ir_version
            onnx.checker.check_model(made_model)
            return made_model.SerializeToString()

        between = helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT,
                                                ["streams", None, None])
        state = next(i for i in model.graph.input if i.name == "state")
        magnitude = next(i for i in model.graph.input if i.name == MAGNITUDE)
        first = half(encoder, "silero_vad_encoder", [magnitude], [between])
        second = half(decoder, "silero_vad_decoder", [between, state],
                      list(model.graph.output))
    except (onnx.checker.ValidationError, ValueError, IndexError, StopIteration):
        return None
    return first, second, features


def products_encoder(encoder: bytes) -> bytes | None:
    """``split_encoder``'s encoder with each convolution as one matrix product over every
    row and output frame at once: the frames each output reads gathered (``Gather``) into one
    row of the product, then ``MatMul``, the bias and the ReLU. ONNX Runtime runs a 1-D
    ``Conv`` as a small product per row, which costs silero's encoder four to five times
    what these products cost. None where the encoder is not 1-D convolutions (one group, no
    dilation) each followed by a ReLU, reading the magnitudes' fixed number of frames."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load_from_string(encoder)
        constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                     for n in model.graph.node if n.op_type == "Constant"}
        working = [n for n in model.graph.node if n.op_type != "Constant"]
        if len(working) % 2 or [n.op_type for n in working] != ["Conv", "Relu"] * (
                len(working) // 2):
            return None
        nodes: list = []
        initializers: list = []

        def named(name: str, value: np.ndarray) -> str:
            initializers.append(numpy_helper.from_array(value, name))
            return name

        nodes.append(helper.make_node("Transpose", [MAGNITUDE], ["frames_0"], perm=[0, 2, 1]))
        x, length = "frames_0", FRAMES  # (rows, frames, channels) from here on
        for i, conv in enumerate(working[::2]):
            attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
            weight = constants[conv.input[1]]
            bias = (constants[conv.input[2]] if len(conv.input) > 2
                    else np.zeros(len(weight), np.float32))
            outputs, channels, kernel = weight.shape
            stride = attributes.get("strides", [1])[0]
            pads = attributes.get("pads", [0, 0])
            if (attributes.get("group", 1) != 1 or attributes.get("dilations", [1]) != [1]
                    or len(pads) != 2 or "auto_pad" in attributes):
                return None
            out = (length + pads[0] + pads[1] - kernel) // stride + 1
            taken = np.array([[t * stride + j for j in range(kernel)] for t in range(out)],
                             np.int64)
            nodes += [
                helper.make_node("Pad", [x, named(f"pads_{i}", np.array(
                    [0, pads[0], 0, 0, pads[1], 0], np.int64))], [f"padded_{i}"]),
                helper.make_node("Gather", [f"padded_{i}", named(f"taken_{i}", taken)],
                                 [f"gathered_{i}"], axis=1),
                helper.make_node("Reshape", [f"gathered_{i}", named(f"shape_{i}", np.array(
                    [0, out, kernel * channels], np.int64))], [f"rows_{i}"]),
                helper.make_node("MatMul", [f"rows_{i}", named(f"weight_{i}", np.ascontiguousarray(
                    weight.transpose(2, 1, 0).reshape(kernel * channels, outputs),
                    np.float32))], [f"product_{i}"]),
                helper.make_node("Add", [f"product_{i}", named(f"bias_{i}", bias.astype(
                    np.float32))], [f"biased_{i}"]),
                helper.make_node("Relu", [f"biased_{i}"], [f"frames_{i + 1}"])]
            x, length = f"frames_{i + 1}", out
        features = working[-1].output[0]
        nodes.append(helper.make_node("Transpose", [x], [features], perm=[0, 2, 1]))
        made = helper.make_model(
            helper.make_graph(nodes, "silero_vad_encoder_products",
                              [helper.make_tensor_value_info(MAGNITUDE, onnx.TensorProto.FLOAT,
                                                             ["streams", None, FRAMES])],
                              [helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT,
                                                             ["streams", None, length])],
                              initializer=initializers),
            opset_imports=[helper.make_opsetid("", 13)])
        made.ir_version = model.ir_version
        onnx.checker.check_model(made)
    except (onnx.checker.ValidationError, ValueError, IndexError, KeyError):
        return None
    return made.SerializeToString()


def _same_features(graph: Any, served: Any) -> bool:
    """Whether two encoder sessions give the same features (within 1e-4 of their scale) for
    magnitudes of speech's range."""
    rng = np.random.default_rng(0)
    spectra = rng.uniform(0.0, 4.0, (6, FFT_SIZE // 2 + 1, FRAMES)).astype(np.float32)
    try:
        theirs = graph.run(None, {MAGNITUDE: spectra})[0]
        ours = served.run(None, {MAGNITUDE: spectra})[0]
    except Exception:  # noqa: BLE001 - any failure of the products' graph: not used
        return False
    return (theirs.shape == ours.shape
            and float(np.abs(theirs - ours).max()) <= 1e-4 * max(1.0, float(np.abs(theirs).max())))


def _names_read(nodes: Sequence) -> set[str]:
    """The tensors ``nodes`` read, in their subgraphs too."""
    import onnx

    read: set[str] = set()
    for node in nodes:
        read.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                read |= _names_read(attribute.g.node)
    return read


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
            return cls(None, f"silero-vad is not installed: {WITHOUT_DETECTOR}; "
                             "`streamtag models install speech` installs the detector")
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
        kept = max(1, round(KEEP_S * SPEECH_RATE / STEP))  # steps
        self.probs: deque[float] = deque(maxlen=kept)
        # the voice's pitch track (streamtag.engine.singing), FRAMES_PER_STEP rows a step
        # kept as the steps' probabilities are, row i of step k at (k * FRAMES_PER_STEP + i)
        # modulo its length; NaN where the step was not speech
        self.pitch = np.full((kept * singing.FRAMES_PER_STEP, 3), np.nan, np.float32)
        self._tail = np.zeros(2 * singing.TAIL, np.float32)  # the samples before the next step
        self._taken: tuple[np.ndarray, np.ndarray] | None = None  # take's, until keep

    def accept(self, samples: np.ndarray, last: bool = False) -> None:
        """Takes samples at the stream's rate. NaN and infinite ones become 0, as the
        frontends make them, and the rest are held within +-MAX_SAMPLE: either would carry
        through the detector's state to every step until its reset, and a broken or hostile
        station's burst is not speech."""
        samples = np.asarray(samples, np.float32)
        if len(samples) and not np.abs(samples).max() <= MAX_SAMPLE:  # NaN compares false
            samples = np.clip(np.where(np.isfinite(samples), samples, np.float32(0.0)),
                              -MAX_SAMPLE, MAX_SAMPLE)
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
        CONTEXT + CHUNK). The steps stay with the track, whole, until ``keep`` stores what
        the detector made of them."""
        with self._lock:
            n = self._waiting_n // STEP
            skipped, self._skipped = self._skipped, 0
            if skipped:  # callers hold the detector's lock: done and probs move with it
                kept = min(skipped, self.probs.maxlen or skipped)
                self.done += skipped - kept
                self._record(np.zeros(kept, np.float32))
                self._tail = np.zeros_like(self._tail)
            if n == 0:
                self._taken = None
                return np.zeros((0, CONTEXT + CHUNK), np.float32)
            waiting = np.concatenate(self._waiting) if len(self._waiting) > 1 \
                else self._waiting[0]
            rest = waiting[n * STEP:]
            self._waiting = [rest] if len(rest) else []
            self._waiting_n = len(rest)
        steps = waiting[: n * STEP]
        self._taken = (self._tail, steps)
        self._tail = steps[-len(self._tail):].copy()
        # a step's chunk and the context before it are its last CONTEXT + CHUNK samples
        return steps.reshape(n, STEP)[:, STEP - CHUNK - CONTEXT:].copy()

    def _record(self, probs: np.ndarray, pitch: np.ndarray | None = None) -> None:
        """Keeps the next steps' probabilities and (where any step was speech) their pitch
        rows ``(steps, FRAMES_PER_STEP, 3)``."""
        per = singing.FRAMES_PER_STEP
        at = (self.done + np.arange(len(probs)))[:, None] * per + np.arange(per)
        self.pitch[at % len(self.pitch)] = np.nan if pitch is None else pitch
        self.probs.extend(probs.tolist())
        self.done += len(probs)

    def keep(self, probs: np.ndarray) -> None:
        """Keeps the detector's probabilities of the steps ``take`` gave, and the pitch
        track of those that are speech."""
        assert self._taken is not None
        (tail, steps), self._taken = self._taken, None
        speech = probs > THRESHOLD
        pitch = None
        if speech.any():
            # each speech step's samples after the ones before it (the first's: the tail of
            # the steps taken before)
            joined = np.concatenate([tail, steps])
            blocks = np.lib.stride_tricks.sliding_window_view(joined, len(tail) + STEP)[::STEP]
            pitch = np.full((len(probs), singing.FRAMES_PER_STEP, 3), np.nan, np.float32)
            pitch[speech] = singing.pitch_frames(blocks[speech])
        self._record(probs, pitch)

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

    def held(self, end_sample: int) -> float | None:
        """The share of held notes (streamtag.engine.singing.held_share) in the voice of the
        ``HOLD_S`` before stream sample ``end_sample``; None where fewer than ``MIN_STEPS``
        steps are kept there or none was speech."""
        per = singing.FRAMES_PER_STEP
        end = math.floor((end_sample - self.sample_offset) / self.step_samples)
        first = end - round(singing.HOLD_S * SPEECH_RATE / STEP)
        first, end = max(first, self.done - len(self.probs), 0), min(end, self.done)
        if end - first < MIN_STEPS:
            return None
        return singing.held_share(self.pitch[np.arange(first * per, end * per)
                                              % len(self.pitch)])

    def sung(self, end_sample: int) -> bool:
        """Whether the voice of the ``HOLD_S`` before stream sample ``end_sample`` holds its
        notes as a singer does (``held`` reaches ``SUNG_SHARE``)."""
        share = self.held(end_sample)
        return share is not None and share >= singing.SUNG_SHARE


def run_tracks(detector: SpeechDetector, tracks: Sequence[SpeechTrack]) -> int:
    """Runs every step waiting in ``tracks``: the encoder over all of them at once (at most
    ENCODE_ROWS rows a run), then the decoder over every stream's ``k``-th step together,
    each stream's in order; returns the chunks run. Callers hold ``detector.lock`` so that two
    threads never move one stream's state at once."""
    taken = [(track, rows) for track in tracks for rows in (track.take(),) if len(rows)]
    if not taken:
        return 0
    with _one_blas_thread():
        return _run_taken(detector, taken)


_blas: Any = None


def _one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs on the calling thread alone. The detector's
    products in numpy are small: OpenBLAS shares them with a thread of its own, which then
    spins waiting for more, and the detector cost twice its CPU time (measured). The setting is the
    process's; ``run_tracks`` runs under the detector's lock, one at a time."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def _run_taken(detector: SpeechDetector,
               taken: list[tuple[SpeechTrack, np.ndarray]]) -> int:
    taken.sort(key=lambda pair: -len(pair[1]))  # the streams with a k-th step come first
    steps, count = len(taken[0][1]), len(taken)
    rows = np.zeros((steps, count, CONTEXT + CHUNK), np.float32)
    for i, (_, own) in enumerate(taken):
        rows[: len(own), i] = own
    lengths = np.array([len(own) for _, own in taken])
    state = np.ascontiguousarray(np.stack([track.state for track, _ in taken], axis=1))
    probs = np.zeros((steps, count), np.float32)
    done = np.array([track.done for track, _ in taken])
    streams = [int(np.count_nonzero(lengths > k)) for k in range(steps)]  # with a k-th step
    k = 0
    while k < steps:
        # the stateless half of the steps from k on, ENCODE_ROWS rows or so in one run
        last, rows_n = k, 0
        while last < steps and (rows_n == 0 or rows_n + streams[last] <= ENCODE_ROWS):
            rows_n += streams[last]
            last += 1
        encoded = detector.encode(np.concatenate([rows[j, : streams[j]]
                                                  for j in range(k, last)]))
        counts = streams[k:last]
        reset = np.concatenate([(done[: streams[j]] + j) % RESET_STEPS == 0
                                for j in range(k, last)])
        p, state[:, : counts[0]] = detector.decode_steps(
            encoded, counts, reset, np.ascontiguousarray(state[:, : counts[0]]))
        at = 0
        for j, n in zip(range(k, last), counts, strict=True):
            probs[j, :n] = p[at: at + n]
            at += n
        k = last
    for i, (track, own) in enumerate(taken):
        track.state = state[:, i].copy()
        track.keep(probs[: len(own), i])
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
