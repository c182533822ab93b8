"""What docs/protocol.md says of a tag's span: min_on_s holds back the "off"s the scores make,
not those the daemon forces (silence, speech, the stream's end), which are dated where the
dead air began or at the tag's own "on": a span may be shorter than min_on_s, even empty."""

from __future__ import annotations

import numpy as np

from streamtag.engine.smoothing import Smoother, SmoothingConfig

HIGH, LOW = np.array([0.9]), np.array([0.1])


def smoother() -> Smoother:
    return Smoother(["rock"], [0.5], SmoothingConfig(time_constant_s=0, margin=0.1,
                                                     min_on_s=2.0, min_off_s=2.0))


def test_falling_scores_turn_a_tag_off_only_after_min_on_s():
    s = smoother()
    assert [e.state for e in s.update(HIGH, 10.0)[1]] == ["on"]
    assert s.update(LOW, 11.0)[1] == []  # on for 1 s of audio: held
    off = s.update(LOW, 12.0)[1]
    assert [(e.state, e.time_s) for e in off] == [("off", 12.0)]


def test_a_silence_begun_before_the_on_turns_the_tag_off_at_its_on_an_empty_span():
    s = smoother()
    on = s.update(HIGH, 10.0)[1]
    off = s.silence(8.0)  # confirmed now; it began before the tag's "on"
    assert [(e.state, e.time_s) for e in on + off] == [("on", 10.0), ("off", 10.0)]


def test_a_silence_turns_the_tag_off_where_it_began_before_min_on_s():
    s = smoother()
    s.update(HIGH, 10.0)
    off = s.silence(10.5)
    assert [(e.state, e.time_s) for e in off] == [("off", 10.5)]  # on for 0.5 s < min_on_s
