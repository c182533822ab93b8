"""musicnn's overlapping windows sharing its front end's clean columns
(streamtag.model.window_reuse, scheme "frontend_columns"): windows computed from what the window
before left give the probabilities of whole windows, in the steps and in the engine."""

from __future__ import annotations

import numpy as np
import pytest
from support.reuse import (
    assert_scored_as_whole,
    music_windows,
    net_file,
    onnx_model,
    reuse_runs_whole,
    serve,
)

from streamtag.audio import testsignals
from streamtag.catalog import musicnn as musicnn_models
from streamtag.model import window_reuse as reuse
from streamtag.model.stored import open_model
from streamtag.nets.musicnn import TEMPORAL_LENGTHS

N_MELS = 48  # a small musicnn: half the bands, a sixth of the filters


def small_musicnn_file(path, window=187, hop=62):
    architecture = {"n_mels": N_MELS, "frontend_width": 0.25, "midend_filters": 16,
                    "backend_units": 20}
    return net_file(path, "musicnn", architecture, name="small-musicnn", tags="abcde",
                    n_mels=N_MELS, window=window, hop=hop)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return onnx_model(small_musicnn_file(tmp_path_factory.mktemp("musicnn") / "small.pt"))


def test_geometry_of_musicnn_s_windows():
    assert reuse.MUSICNN_BRANCH_FRAMES == (7, 7, *TEMPORAL_LENGTHS)
    g = reuse.musicnn_geometry(187, 62)
    # timbral (7 frames, 3 before): clean 3..183, so 3..121 also clean in the window before;
    # temporal 128 (63 before): clean 63..122, fewer columns than the hop, so none
    assert g.taken == ((3, 122), (3, 122), None, (31, 93), (15, 109))
    assert (g.lag, g.shift, g.lag_frames) == (1, 62, 62)
    # the mid-end's timbral part reads 7 columns: 3 in from the timbral columns taken
    assert g.midend_taken == (6, 119)
    assert reuse.musicnn_geometry(187, 31).taken[2] == (63, 92)  # a shorter hop reuses all five
    assert reuse.musicnn_geometry(187, 175) is None  # timbral: 6 columns, too few
    assert reuse.musicnn_geometry(187, 187) is None


def test_the_model_file_stores_the_steps_at_its_hop(small_model):
    stored = open_model(small_model.path)
    assert stored.manifest.window_reuse["scheme"] == "frontend_columns"
    assert stored.reuse_hops() == (62,)


@pytest.mark.parametrize("hop", [62, 31, 100, 171])  # 171: timbral columns only
def test_windows_from_carries_match_whole_windows(small_model, hop):
    r, windows, expected = reuse_runs_whole(small_model, hop, 6)
    # batched: windows 1..5 at once, each with the carry of the one before
    _, carries = r.first(windows[:5])
    probs, _ = r.next(windows[1:], carries)
    np.testing.assert_allclose(probs, expected[1:], atol=1e-4, rtol=0)
    # and a carry is not a window's whole front end: the timbral columns taken, at least
    g = r.geometry
    width = g.taken[0][1] - g.taken[0][0]
    assert carries.shape[0] == 5 and carries.shape[1] >= 2 * 32 * width


def test_another_window_and_hop(tmp_path):
    # 150 frames every 45: the 128-frame branch has 23 clean columns, too few to take
    model = onnx_model(small_musicnn_file(tmp_path / "short.pt", 150, 45))
    r, _, _ = reuse_runs_whole(model, 45, 5)
    assert r.geometry.taken == ((3, 102), (3, 102), None, (31, 73), (15, 89))


@pytest.mark.parametrize("max_batch", [1, 3])
@pytest.mark.parametrize("hop_seconds", [None, 0.5])
def test_engine_with_reuse_scores_as_whole_windows(small_model, max_batch, hop_seconds):
    audio = {"a": testsignals.music_like(12.0, 16000.0, seed=1),
             "b": testsignals.music_like(9.5, 16000.0, seed=2)}
    reused, engine = serve(small_model, audio, max_batch=max_batch, hop_seconds=hop_seconds)
    whole, plain = serve(small_model, audio, max_batch=max_batch, reuse_windows=False,
                         hop_seconds=hop_seconds)
    assert engine.window_reuse is not None and plain.window_reuse is None
    assert engine.window_reuse.geometry.hop == (62 if hop_seconds is None else 31)
    windows = engine.stats["windows"]
    assert windows == plain.stats["windows"] == len(whole.results) > 10
    # one window a pass: every window but each stream's first and its end's one took a carry;
    # in passes of 3 not those that met the window they need in the same pass
    least = windows - 2 * len(audio) if max_batch == 1 else windows // 3
    assert engine.stats["reused_windows"] >= least
    assert_scored_as_whole(reused, whole)


@pytest.fixture(scope="module", params=["musicnn-msd", "vgg-msd"])
def installed(request, tmp_path_factory):
    package = musicnn_models.find_installed_package()
    if package is None:
        pytest.skip("the musicnn package is not installed: pip install --no-deps musicnn")
    path = tmp_path_factory.mktemp("installed") / f"{request.param}.pt"
    musicnn_models.convert(package, request.param, path)  # as `models install` writes it
    return onnx_model(path)


def test_the_published_models_as_installed_reuse_their_windows(installed):
    # the steps come from the file (stored at install), checked at load against its graph
    assert open_model(installed.path).reuse_hops() == (62,)
    r, why = installed.window_reuse(62)
    assert r is not None, why
    windows = music_windows(installed, 62, 5)
    expected = installed.forward(windows)
    np.testing.assert_allclose(r.run(windows), expected, atol=1e-4, rtol=0)
    assert expected.max() > 0.05  # music: some tag is clearly on


@pytest.fixture(scope="module")
def small_vgg(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "small-vgg.pt"
    return onnx_model(net_file(path, "musicnn_vgg", {"n_mels": 64, "filters": 64},
                               name="small-vgg", tags="abcde", n_mels=64, window=187, hop=62))


def test_geometry_of_musicnn_vgg_s_windows():
    # 187 frames every 62: the second convolution's 92 columns move by 31; its columns 0-1
    # and 91 meet the padding, and the first pool's column 91 reads the first convolution's
    # padded frame 186, so column 90 does too: a window takes columns 2..59
    g = reuse.vgg_geometry(187, 62)
    assert (g.lag, g.shift, g.columns, g.taken) == (1, 31, 92, (2, 60))
    odd = reuse.vgg_geometry(187, 31)  # the window two before is 62 frames back
    assert (odd.lag, odd.shift, odd.taken, odd.lag_frames) == (2, 31, (2, 60), 62)
    assert reuse.vgg_geometry(187, 170) is None  # 4 columns to take


@pytest.mark.parametrize("hop", [62, 31, 40])
def test_vgg_windows_from_carries_match_whole_windows(small_vgg, hop):
    r, windows, _ = reuse_runs_whole(small_vgg, hop, 6)
    start, stop = r.geometry.taken
    _, carries = r.first(windows[:2])
    assert carries.shape == (2, 64, stop - start, 32)  # (channels, frames, bands)


@pytest.mark.parametrize("max_batch", [1, 3])
def test_vgg_engine_with_reuse_scores_as_whole_windows(small_vgg, max_batch):
    audio = {"a": testsignals.music_like(10.0, 16000.0, seed=1),
             "b": testsignals.music_like(8.5, 16000.0, seed=2)}
    reused, engine = serve(small_vgg, audio, max_batch=max_batch, hop_seconds=0.5)
    whole, _ = serve(small_vgg, audio, max_batch=max_batch, reuse_windows=False,
                     hop_seconds=0.5)
    assert engine.window_reuse.geometry.lag == 2
    assert engine.stats["reused_windows"] >= engine.stats["windows"] // 3
    assert len(reused.results) == len(whole.results) > 10
    for got, want in zip(reused.results, whole.results, strict=True):
        assert (got.stream_id, got.index) == (want.stream_id, want.index)
        np.testing.assert_allclose(got.raw, want.raw, atol=1e-4, rtol=0)
        assert [(e.tag, e.state) for e in got.events] == [(e.tag, e.state) for e in want.events]
