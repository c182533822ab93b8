"""Smoothing: EMA by time constant, hysteresis, minimum durations, events."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtag.engine.smoothing import Smoother, SmoothingConfig


def test_ema_follows_the_time_constant_whatever_the_hop():
    for hop in (0.1, 0.5, 1.0):
        s = Smoother(["a"], [0.5], SmoothingConfig(time_constant_s=2.0))
        s.update(np.array([0.0]), 0.0)
        t = 0.0
        while t < 2.0 - 1e-9:
            t += hop
            smoothed, _ = s.update(np.array([1.0]), t)
        # After one time constant of a unit step the EMA reaches 1 - 1/e.
        assert smoothed[0] == pytest.approx(1 - math.exp(-1), abs=1e-9)


def test_hysteresis_and_events():
    s = Smoother(["calm", "loud"], [0.5, 0.5],
                 SmoothingConfig(time_constant_s=0, margin=0.1, min_on_s=0, min_off_s=0))
    timeline = [(0.0, [0.2, 0.6]), (1.0, [0.55, 0.45]), (2.0, [0.45, 0.39]), (3.0, [0.39, 0.5])]
    got = []
    for t, scores in timeline:
        _, events = s.update(np.array(scores), t)
        got += [(e.tag, e.state, e.time_s) for e in events]
    # loud: on at 0 (0.6), stays on at 0.45 (above 0.4), off at 0.39, on again at 0.5.
    # calm: on at 1 (0.55), stays on at 0.45, off at 0.39.
    assert got == [("loud", "on", 0.0), ("calm", "on", 1.0), ("loud", "off", 2.0),
                   ("calm", "off", 3.0), ("loud", "on", 3.0)]
    assert s.active_tags() == ("loud",)
    assert [(e.tag, e.state) for e in s.close(4.0)] == [("loud", "off")]


def test_minimum_durations_suppress_flicker():
    s = Smoother(["x"], [0.5], SmoothingConfig(time_constant_s=0, margin=0.0,
                                               min_on_s=3.0, min_off_s=2.0))
    flicker = [0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9]
    states = []
    for t, v in enumerate(flicker):
        _, events = s.update(np.array([v]), float(t))
        states += [(e.state, t) for e in events]
    # on at 0; the dip at 1 is inside min_on; off at 3 (held 3 s); back on no earlier than 5.
    assert states == [("on", 0), ("off", 3), ("on", 6)]


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="margin"):
        SmoothingConfig(margin=-1)
    with pytest.raises(ValueError, match="thresholds"):
        Smoother(["a", "b"], [0.5])


@pytest.mark.parametrize("scores", [np.zeros(3), np.zeros((1, 2)), 0.5, [0.1]])
def test_scores_of_the_wrong_shape_are_refused_by_name(scores):
    s = Smoother(["a", "b"], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"expected 2 scores, got shape \("):
        s.update(scores, 0.0)
    s.update(np.array([0.7, 0.1]), 1.0)  # nothing was lost
    assert s.smoothed.tolist() == [0.7, 0.1]


def _reference_run(tags, thresholds, config, timeline):
    """The smoother's rules written out plainly, tag by tag, to check the vectorised one."""
    off_level = [max(t - config.margin, t / 2) for t in thresholds]
    smoothed, active = None, [False] * len(tags)
    changed_at = [-math.inf] * len(tags)
    last, out = None, []
    for time_s, scores in timeline:
        if smoothed is None or config.time_constant_s == 0:
            smoothed = list(scores)
        else:
            alpha = 1.0 - math.exp(-max(0.0, time_s - last) / config.time_constant_s)
            smoothed = [s + alpha * (x - s) for s, x in zip(smoothed, scores, strict=True)]
        last = time_s
        events = []
        for state in ("off", "on"):
            for i, tag in enumerate(tags):
                held = time_s - changed_at[i]
                if state == "on" and not active[i] and smoothed[i] >= thresholds[i] \
                        and held >= config.min_off_s:
                    events.append((tag, "on"))
                if state == "off" and active[i] and smoothed[i] < off_level[i] \
                        and held >= config.min_on_s:
                    events.append((tag, "off"))
        for tag, _ in events:
            i = tags.index(tag)
            active[i] = not active[i]
            changed_at[i] = time_s
        on = tuple(t for t, a in zip(tags, active, strict=True) if a)
        out.append((list(smoothed), events, on))
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_vectorised_smoother_follows_the_rules_tag_by_tag(data):
    n = data.draw(st.integers(1, 6))
    tags = [f"t{i}" for i in range(n)]
    thresholds = data.draw(st.lists(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.7]), min_size=n,
                                    max_size=n))
    config = SmoothingConfig(time_constant_s=data.draw(st.sampled_from([0.0, 0.5, 2.0])),
                             margin=data.draw(st.sampled_from([0.0, 0.1, 0.4])),
                             min_on_s=data.draw(st.sampled_from([0.0, 1.0, 3.0])),
                             min_off_s=data.draw(st.sampled_from([0.0, 1.0, 2.0])))
    # scores on a coarse grid, so that many land exactly on a threshold
    steps = data.draw(st.lists(st.lists(st.sampled_from([0.0, 0.05, 0.2, 0.3, 0.5, 0.6, 0.7, 1.0]),
                                        min_size=n, max_size=n), min_size=1, max_size=25))
    # as a model gives them (float32), as float64, or a plain list
    kind = data.draw(st.sampled_from([np.float32, np.float64, list]))
    given_ = [np.array(s, dtype=kind) if kind is not list else s for s in steps]
    timeline = [(0.5 * k, [float(x) for x in scores]) for k, scores in enumerate(given_)]
    smoother = Smoother(tags, thresholds, config)
    kept = []
    for k, (smoothed, events, active) in enumerate(
            _reference_run(tags, thresholds, config, timeline)):
        got, got_events = smoother.update(given_[k], timeline[k][0])
        kept.append((got, got.copy()))
        assert got.tolist() == smoothed  # bitwise: the same operations in the same order
        assert [(e.tag, e.state) for e in got_events] == events
        assert smoother.active_tags() == active
    # an array handed out is never changed by later windows
    for handed_out, copy in kept:
        assert np.array_equal(handed_out, copy)
