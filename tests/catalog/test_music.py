"""``music``, the recommended real-music tagger: musicnn's MSD and MTT taggers on one input,
one tag list. Its tags are the two lists merged, its probabilities each network's (the mean
where both name a tag), its overlapping windows share work in both networks, and `models
install music` writes it with thresholds fitted on real music."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.reuse import (
    assert_scored_as_whole,
    music_windows,
    net_file,
    onnx_model,
    reuse_runs_whole,
    serve,
)

from streamtag.audio import testsignals
from streamtag.catalog import installed, music
from streamtag.catalog import musicnn as musicnn_models
from streamtag.catalog.calibration import REAL_MUSIC_THRESHOLDS
from streamtag.cli import main
from streamtag.model.manifest import read_manifest
from streamtag.model.stored import open_model

PACKAGE = musicnn_models.find_installed_package()
NEEDS_MUSICNN = pytest.mark.skipif(
    PACKAGE is None, reason="needs musicnn's checkpoints: pip install --no-deps musicnn==0.1.0")


def test_merged_tags_keep_the_first_spelling_and_average_what_both_name():
    tags, first_mix, second_mix = music.merged_tags(("rock", "Mellow", "guitar"),
                                                    ("piano", "Guitar", "rock", "choir"))
    assert tags == ("rock", "Mellow", "guitar", "piano", "choir")
    first = torch.tensor([[0.2, 0.4, 0.6]])
    second = torch.tensor([[0.9, 0.8, 0.0, 0.3]])
    merged = first @ first_mix + second @ second_mix
    # rock: (0.2 + 0.0) / 2; Mellow: first's; guitar: (0.6 + 0.8) / 2; piano, choir: second's
    np.testing.assert_allclose(merged[0].numpy(), [0.1, 0.4, 0.7, 0.9, 0.3], atol=1e-7)


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    options = {"first_tags": 3, "second_tags": 4, "n_mels": 48, "frontend_width": 0.25,
               "midend_filters": 16, "backend_units": 20}
    path = net_file(tmp_path_factory.mktemp("pair") / "pair.pt", "musicnn_pair", options,
                    name="small-pair", tags="abcdefg", n_mels=48, window=187, hop=62)
    return onnx_model(path)


def test_a_pair_stores_its_steps_and_serves_reused_windows_as_whole_ones(small_pair):
    assert open_model(small_pair.path).manifest.window_reuse["scheme"] == "frontend_columns"
    r, windows, expected = reuse_runs_whole(small_pair, 62, 6)
    _, carries = r.first(windows[:5])
    probs, _ = r.next(windows[1:], carries)
    np.testing.assert_allclose(probs, expected[1:], atol=1e-4, rtol=0)


def test_the_engine_scores_a_pair_with_reuse_as_whole_windows(small_pair):
    audio = {"a": testsignals.music_like(9.0, 16000.0, seed=1)}
    reused, engine = serve(small_pair, audio, max_batch=2)
    whole, _ = serve(small_pair, audio, max_batch=2, reuse_windows=False)
    assert engine.stats["reused_windows"] > 0
    assert_scored_as_whole(reused, whole)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """music, musicnn-msd and musicnn-mtt converted from the installed package."""
    if PACKAGE is None:
        pytest.skip("needs musicnn's checkpoints: pip install --no-deps musicnn==0.1.0")
    folder = tmp_path_factory.mktemp("music")
    paths = {"music": folder / "music.pt"}
    music.convert(PACKAGE, paths["music"])
    for name in music.MEMBERS:
        paths[name] = folder / f"{name}.pt"
        musicnn_models.convert(PACKAGE, name, paths[name])
    return paths


@NEEDS_MUSICNN
def test_music_names_genres_moods_and_instruments_in_one_list(converted):
    manifest = read_manifest(converted["music"])
    msd = read_manifest(converted["musicnn-msd"]).tags
    mtt = read_manifest(converted["musicnn-mtt"]).tags
    assert manifest.tags[:50] == msd
    shared = {t.lower() for t in msd} & {t.lower() for t in mtt}
    assert shared == {"rock", "pop", "electronic", "dance", "ambient", "guitar", "country",
                      "metal"}
    assert len(manifest.tags) == 100 - len(shared) == 92
    assert {"classical", "piano", "strings", "violin", "choir", "vocals", "Mellow", "happy",
            "sad", "chillout", "rock", "jazz"} <= set(manifest.tags)
    recipe = manifest.recipe
    assert recipe["made_of"] == ["musicnn-msd", "musicnn-mtt"]
    assert recipe["licence"] == "ISC" and "Pons" in recipe["citation"]
    assert set(recipe["checkpoint_sha256"]) == {
        f"{folder}/{p.name}" for name, folder in (("musicnn-msd", "MSD_musicnn"),
                                                  ("musicnn-mtt", "MTT_musicnn"))
        for p in musicnn_models.checkpoint_files(PACKAGE, name)}
    assert manifest.window_reuse["scheme"] == "frontend_columns"


@NEEDS_MUSICNN
def test_music_scores_as_its_two_taggers_do(converted):
    models = {name: onnx_model(path) for name, path in converted.items()}
    windows = music_windows(models["music"], 62, 4)
    got = models["music"].forward(windows)
    msd = models["musicnn-msd"].forward(windows)
    mtt = models["musicnn-mtt"].forward(windows)
    tags = models["music"].tags
    msd_tags = {t.lower(): i for i, t in enumerate(models["musicnn-msd"].tags)}
    mtt_tags = {t.lower(): i for i, t in enumerate(models["musicnn-mtt"].tags)}
    for j, tag in enumerate(tags):
        a, b = msd_tags.get(tag.lower()), mtt_tags.get(tag.lower())
        want = (msd[:, a] + mtt[:, b]) / 2 if a is not None and b is not None else (
            msd[:, a] if a is not None else mtt[:, b])
        np.testing.assert_allclose(got[:, j], want, atol=1e-4, rtol=0, err_msg=tag)
    # and its windows share work as the members' do
    reuse_runs_whole(models["music"], 62, 5)


@NEEDS_MUSICNN
def test_models_install_music_carries_thresholds_fitted_on_real_music(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv(installed.HOME_ENV, str(tmp_path))
    said: list[str] = []
    done = installed.install(["music"], log=said.append)
    assert done[0] == ("music", tmp_path / "models" / "music.pt")
    # silero-vad's speech detector comes along, or where it cannot be fetched that is said
    assert done[1:] == [("speech", tmp_path / "models" / "silero-vad.onnx")] or any(
        "silero-vad's speech detector is not" in line for line in said), said
    manifest = read_manifest(tmp_path / "models" / "music.pt")
    assert manifest.options["calibration"]["audio"].startswith("real music")
    table = json.loads(REAL_MUSIC_THRESHOLDS.read_text())["music"]
    assert list(manifest.thresholds) == pytest.approx(table["thresholds"])
    # fitted on one half of the excerpts, checked on the other: mostly 1 to 5 tags on
    held_out = table["check"]["real_music_fit_on_other_half"]
    assert held_out["share_0"] < 0.1
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "music, 92 tags: musicnn-msd + musicnn-mtt on one input" in out
