"""Overlapping windows sharing work (streamtag.model.window_reuse): the default model's and
short_chunk_resnet's windows computed from what an earlier window of the stream left give the
probabilities of whole windows."""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import tiny_model_file
from support.reuse import (
    Sink,
    assert_scored_as_whole,
    net_file,
    onnx_model,
    reuse_runs_whole,
    serve,
)

from streamtag import nets
from streamtag.audio import testsignals
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.config import ConfigError, EngineConfig
from streamtag.engine.batching import Engine
from streamtag.model import modelfile, reuse_export
from streamtag.model import window_reuse as reuse
from streamtag.model.inference import InferenceModel


@pytest.fixture(scope="module")
def default_model():
    return onnx_model(default_model_path())


def resnet_file(path, window=100, **architecture):
    return net_file(path, "short_chunk_resnet", architecture, name="scr", tags="abcd",
                    n_mels=128, window=window, hop=window // 2)


@pytest.fixture(scope="module")
def resnet_model(tmp_path_factory):
    """short_chunk_resnet with batch norms as trained, on 100-frame windows (1.6 s)."""
    return onnx_model(resnet_file(tmp_path_factory.mktemp("resnet") / "scr.pt"))


def test_geometry_of_the_default_model_s_windows():
    g = reuse.geometry(93, 31)
    # an odd hop: the window two before pairs the frames alike; 31 frames = 31 pooled columns
    assert (g.lag, g.shift, g.carried) == (2, 31, 6)
    # the second convolution on its columns 12..42 (31 of 43), the first layer on 24..91
    assert (g.lo, g.hi, g.frames) == (12, 42, (24, 92))
    assert g.lag_frames == 62
    even = reuse.geometry(93, 30)
    assert (even.lag, even.shift, even.carried) == (1, 15, 14)
    assert reuse.geometry(93, 92) is None and reuse.geometry(93, 93) is None


def test_geometry_of_short_chunk_resnet_s_windows():
    # 231 frames every 62: the first block's 116 columns move by 31 from one window to the
    # next; columns 0-1 and 114-115 meet the padding, so a window takes 2..82 from the carry
    g = reuse.resnet_geometry(231, 62)
    assert (g.lag, g.shift, g.columns, g.taken) == (1, 31, 116, (2, 83))
    odd = reuse.resnet_geometry(231, 31)  # the window two before is 62 frames back
    assert (odd.lag, odd.shift, odd.taken, odd.lag_frames) == (2, 31, (2, 83), 62)
    assert reuse.resnet_geometry(100, 50).taken == (2, 24)
    assert reuse.resnet_geometry(100, 90) is None  # 2 columns to take


@pytest.mark.parametrize("hop", [31, 30, 7, 60])
def test_windows_from_carries_match_whole_windows(default_model, hop):
    r, windows, expected = reuse_runs_whole(default_model, hop, 8)
    # and the steps batched: windows 2..7 at once, each with the carry of the one 2 before
    lag = r.geometry.lag
    probs, carries = r.first(windows[:lag])
    for start in range(lag, len(windows), lag):
        probs, carries = r.next(windows[start:start + lag], carries)
        np.testing.assert_allclose(probs, expected[start:start + lag], atol=1e-4, rtol=0)


@pytest.mark.parametrize("hop", [50, pytest.param(25, marks=pytest.mark.slow),
                                 pytest.param(36, marks=pytest.mark.slow)])  # 4-5 s each
def test_short_chunk_resnet_windows_from_carries_match_whole_windows(resnet_model, hop):
    r, windows, expected = reuse_runs_whole(resnet_model, hop, 6)
    assert r.geometry.lag == (1 if hop % 2 == 0 else 2)
    # a carry is the first block's output on the columns the window lag after takes
    start, stop = r.geometry.taken
    _, carries = r.first(windows[:2])
    assert carries.shape == (2, 128, 64, stop - start)
    probs, _ = r.next(windows[r.geometry.lag:r.geometry.lag + 2], carries)
    np.testing.assert_allclose(probs, expected[r.geometry.lag:r.geometry.lag + 2], atol=1e-4,
                               rtol=0)


def test_every_scheme_the_registry_declares_has_its_steps():
    assert set(reuse_export.SCHEMES) == set(reuse.GEOMETRIES) == set(nets.WINDOW_REUSE)


def test_a_model_without_reuse_says_why(tmp_path, default_model):
    tiny = InferenceModel.load(tiny_model_file(tmp_path / "tiny.pt"), backend="onnxruntime")
    r, why = tiny.window_reuse(tiny.hop)
    assert r is None and "only mel_cnn" in why
    torch_served = InferenceModel.load(default_model_path(), backend="torch")
    r, why = torch_served.window_reuse(31)
    assert r is None and "ONNX Runtime" in why
    r, why = default_model.window_reuse(92)
    assert r is None and "overlap too little" in why
    # seven 2x2 max pools need at least 128 frames
    pooled = InferenceModel.load(resnet_file(tmp_path / "pooled.pt", 128, downsample="maxpool"),
                                 backend="onnxruntime")
    r, why = pooled.window_reuse(64)
    assert r is None and 'only with downsample = "stride"' in why


@pytest.mark.parametrize(("which", "max_batch"), [
    ("default_model", 1), ("default_model", 3), ("resnet_model", 1), ("resnet_model", 3)])
def test_engine_with_reuse_scores_as_whole_windows(request, which, max_batch):
    model = request.getfixturevalue(which)
    audio = {"a": testsignals.music_like(24.0, 16000.0, seed=1),
             "b": testsignals.music_like(17.5, 16000.0, seed=2)}
    reused, engine = serve(model, audio, max_batch=max_batch)
    whole, plain = serve(model, audio, max_batch=max_batch, reuse_windows=False)
    assert engine.window_reuse is not None and plain.window_reuse is None
    assert plain.stats["reused_windows"] == 0
    windows = engine.stats["windows"]
    assert windows == plain.stats["windows"] == len(whole.results)
    # one window a pass: every window but each stream's first (two: the default model's odd
    # hop) and its end's one took a carry; in passes of 3 also not a window that met the one
    # it needs in the same pass
    least = windows - 3 * len(audio) if max_batch == 1 else windows // 2
    assert engine.stats["reused_windows"] >= least
    assert_scored_as_whole(reused, whole)
    # a stream's carries are let go when it closes
    assert all(not engine._stream(sid).carries for sid in audio)


def test_a_stream_past_a_gap_computes_its_window_whole(default_model):
    # a live stream that loses windows (or any window without the carry it needs) runs the
    # whole-window step: the probabilities stay those of the whole window
    audio = testsignals.music_like(12.0, 16000.0, seed=4)
    sink = Sink()
    engine = Engine(default_model, sink, EngineConfig(max_batch=1))
    engine.add_stream("s")
    engine.accept("s", audio[:16000 * 6], wait=False)
    engine.drain()
    reused_before = engine.stats["reused_windows"]
    engine._stream("s").carries.clear()  # as if the windows before had been dropped
    engine.accept("s", audio[16000 * 6:], wait=False)
    engine.finish_stream("s")
    engine.drain()
    whole, _ = serve(default_model, {"s": audio}, max_batch=1, reuse_windows=False)
    got = np.array([r.raw for r in sink.results])
    np.testing.assert_allclose(got, np.array([r.raw for r in whole.results]), atol=1e-4,
                               rtol=0)
    # the two windows after the gap had no carry to take
    assert engine.stats["reused_windows"] - reused_before <= len(sink.results) - reused_before - 2


def test_reuse_windows_must_be_a_bool():
    with pytest.raises(ConfigError, match="reuse_windows must be true or false"):
        EngineConfig(reuse_windows="yes")
    assert EngineConfig().reuse_windows is True


def test_the_model_file_is_unchanged_by_reuse(default_model):
    # the reuse's graphs are built at load from the network; the file keeps its one graph
    loaded = modelfile.load(default_model_path(), "cpu")
    assert loaded.manifest.onnx["file"] == "model.onnx"
