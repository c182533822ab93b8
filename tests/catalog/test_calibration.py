"""The threshold rule (streamtag.catalog.calibration) on score tables with known properties; the
rule on a real model and real decoding is tested in tests/catalog/test_importer.py."""

from __future__ import annotations

import numpy as np
import pytest

from streamtag.catalog.calibration import ThresholdRule, Track, active_counts, choose_thresholds
from streamtag.engine.smoothing import Smoother, SmoothingConfig
from streamtag.errors import ModelError


def sparse_tracks(seed: int = 0, n_tracks: int = 4, windows: int = 60, tags: int = 50):
    """MSD-like scores: low everywhere, a few tags per track higher, drifting slowly."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.005, 0.05, tags)
    tracks = []
    for _ in range(n_tracks):
        strong = rng.choice(tags, size=4, replace=False)
        level = base.copy()
        level[strong] = rng.uniform(0.15, 0.5, 4)
        raw = np.clip(level * rng.lognormal(0, 0.3, (windows, tags)), 0, 1)
        times = np.arange(1, windows + 1, dtype=np.float64)
        smoother = Smoother([str(i) for i in range(tags)], np.full(tags, 0.5))
        smoothed = np.array([smoother.update(row, t)[0] for row, t in zip(raw, times,
                                                                          strict=True)])
        tracks.append(Track(raw, smoothed, times))
    return tracks


def test_the_rule_gives_one_to_six_tags_and_respects_its_bounds():
    tracks = sparse_tracks()
    rule = ThresholdRule()
    result = choose_thresholds(tracks, rule)
    assert result.share_in_range >= 0.9 and result.empty_share <= 0.05
    assert result.budget in rule.budgets
    counts = np.concatenate([active_counts(t, result.thresholds) for t in tracks])
    assert counts.max() < 50
    scores = np.concatenate([t.smoothed for t in tracks])
    floor = rule.relative_floor * np.median(scores.max(axis=1))
    assert (result.thresholds >= floor - 1e-12).all()
    share_over = (scores >= result.thresholds).mean(axis=0)
    assert share_over.max() <= rule.max_share + 1.0 / len(scores)  # no tag on always
    # Most thresholds are far below 0.5 (which would leave most windows empty), none is zero.
    assert np.median(result.thresholds) < 0.25 and result.thresholds.min() > 0


def test_hysteresis_turns_a_low_threshold_tag_off():
    """With a threshold below the margin the off point is half the threshold, not negative."""
    smoother = Smoother(["x"], [0.06], SmoothingConfig(time_constant_s=0, margin=0.1,
                                                       min_on_s=0, min_off_s=0))
    _, events = smoother.update(np.array([0.08]), 1.0)
    assert [e.state for e in events] == ["on"]
    _, events = smoother.update(np.array([0.04]), 2.0)
    assert events == []  # 0.04 is above half of 0.06: still on
    _, events = smoother.update(np.array([0.02]), 3.0)
    assert [e.state for e in events] == ["off"]


def test_no_windows_is_an_error_saying_what_to_give():
    empty = Track(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ModelError, match="longer recordings"):
        choose_thresholds([empty])


def test_too_little_sound_sets_no_thresholds_and_leaves_the_file(tmp_path):
    # 2 s of music gave one window and all thresholds from it; 30 s of digital silence gave
    # 29 windows of what a model says of nothing. Both are refused, the model file unchanged.
    import shutil

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.catalog.calibration import calibrate_file
    from streamtag.catalog.shipped import default_model_path

    model = tmp_path / "mine.pt"
    shutil.copy(default_model_path(), model)
    before = model.read_bytes()
    short, silent, music = tmp_path / "short.wav", tmp_path / "silent.wav", tmp_path / "m.wav"
    write_audio(short, music_like(2.0, 16000, seed=1), 16000)
    write_audio(silent, np.zeros(30 * 16000, np.float32), 16000)
    write_audio(music, music_like(14.0, 16000, seed=2), 16000)
    with pytest.raises(ModelError, match=r"on 1 window\(s\) of sound: it needs at least 8"):
        calibrate_file(model, [short])
    with pytest.raises(ModelError, match=r"on 0 window\(s\) of sound \(\d+ quiet or silent, "
                                         r"below -50 dBFS, left out\)"):
        calibrate_file(model, [silent])
    assert model.read_bytes() == before
    # silence beside music: its windows are left out, the music's set the thresholds
    result, _ = calibrate_file(model, [music, silent])
    alone, _ = calibrate_file(model, [music])
    assert result.windows == alone.windows
    np.testing.assert_array_equal(result.thresholds, alone.thresholds)


def test_info_and_calibrate_take_a_model_file_s_path(tmp_path, capsys):
    import shutil

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.catalog.shipped import default_model_path
    from streamtag.cli import main

    model = tmp_path / "mine.pt"
    shutil.copy(default_model_path(), model)
    assert main(["models", "info", str(model)]) == 0
    assert capsys.readouterr().out.startswith(f"{model}: {model}")
    music = tmp_path / "m.wav"
    write_audio(music, music_like(14.0, 16000, seed=2), 16000)
    assert main(["models", "calibrate", str(model), str(music)]) == 0
    assert f"written to {model}" in capsys.readouterr().out
    assert main(["models", "info", str(tmp_path / "none.pt")]) == 2
    assert "no such model file" in capsys.readouterr().err
