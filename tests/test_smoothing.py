"""Smoothing: EMA by time constant, hysteresis, minimum durations, events."""

import math

import numpy as np
import pytest

from streamtag.smoothing import Smoother, SmoothingConfig


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
    assert s.active_tags() == ["loud"]
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
