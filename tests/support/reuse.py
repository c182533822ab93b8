"""What the window reuse tests (tests/model/test_window_reuse.py,
tests/model/test_window_reuse_musicnn.py) share: small real model files of a reusing network,
windows of music, the engine run over whole streams, and the checks that reused windows give
the probabilities of whole windows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from support.helpers import trained_looking

from streamtag import nets
from streamtag.audio import testsignals
from streamtag.daemon.config import EngineConfig
from streamtag.engine.batching import Engine, EngineSink
from streamtag.frontend import LogMelOptions, compute_logmel
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel

if TYPE_CHECKING:
    from streamtag.model.window_reuse import WindowReuse


def net_file(path: Path, architecture: str, options: dict, *, name: str, tags: str, n_mels: int,
             window: int, hop: int) -> Path:
    """A model file of the network ``architecture`` built with ``options`` (seed 0, batch norms
    as trained), one tag per letter of ``tags``, on the musicnn front end with ``n_mels``
    bands."""
    torch.manual_seed(0)
    net = trained_looking(nets.build(architecture, len(tags), **options))
    modelfile.save(net, path, {
        "name": name, "tags": list(tags), "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn").replace(n_mels=n_mels), "window": window,
        "hop": hop, "architecture": {"name": architecture, **options}})
    return path


def onnx_model(path: Path) -> InferenceModel:
    return InferenceModel.load(path, backend="onnxruntime", threads=1)


def music_windows(model: InferenceModel, hop: int, count: int) -> np.ndarray:
    seconds = (model.window + hop * (count - 1)) * model.frontend.hop_length / 16000 + 0.2
    frames = compute_logmel(testsignals.music_like(seconds, 16000.0, seed=3), model.frontend)
    frames = np.ascontiguousarray(frames.T)  # (n_mels, frames)
    assert frames.shape[1] >= model.window + hop * (count - 1)
    return np.stack([frames[:, i * hop: i * hop + model.window] for i in range(count)])


def reuse_runs_whole(model: InferenceModel, hop: int,
                     count: int) -> tuple[WindowReuse, np.ndarray, np.ndarray]:
    """The model's reuse at ``hop``, which must exist, run over ``count`` windows of music and
    checked against the TorchScript module's probabilities of the whole windows: the reuse,
    the windows and those probabilities."""
    r, why = model.window_reuse(hop)
    assert r is not None, why
    windows = music_windows(model, hop, count)
    expected = model.loaded(windows).numpy()
    np.testing.assert_allclose(r.run(windows), expected, atol=1e-4, rtol=0)
    return r, windows, expected


class Sink(EngineSink):
    def __init__(self) -> None:
        self.results, self.ends = [], []

    def on_window(self, result) -> None:
        self.results.append(result)

    def on_stream_end(self, stream_id, events, end_s) -> None:
        self.ends.append((stream_id, [(e.tag, e.state) for e in events], end_s))


def serve(model: InferenceModel, audio: dict[str, np.ndarray], **config) -> tuple[Sink, Engine]:
    sink = Sink()
    engine = Engine(model, sink, EngineConfig(**config))
    for sid in audio:
        engine.add_stream(sid)
    chunk = 7919  # chunks that do not line up with windows or hops
    for i in range(0, max(len(a) for a in audio.values()), chunk):
        for sid, a in audio.items():
            if i < len(a):
                engine.accept(sid, a[i:i + chunk], wait=False)
    for sid in audio:
        engine.finish_stream(sid)
    engine.drain()
    return sink, engine


def assert_scored_as_whole(reused: Sink, whole: Sink) -> None:
    """The engine's results with window reuse are those without: the same windows in the same
    order, the same probabilities (within 1e-4) and events, the same ends of streams."""
    for got, want in zip(reused.results, whole.results, strict=True):
        assert (got.stream_id, got.index, got.end_sample) == (
            want.stream_id, want.index, want.end_sample)
        np.testing.assert_allclose(got.raw, want.raw, atol=1e-4, rtol=0)
        assert [(e.tag, e.state) for e in got.events] == [(e.tag, e.state) for e in want.events]
    assert sorted(reused.ends) == sorted(whole.ends)
