"""streamtag demo: the daemon on the generated piece, printed live, ending cleanly; on the default
piece the shipped model agrees with the piece's truth; the demo's piece leaves the training
data as it was."""

import hashlib
import io
import re

import numpy as np
import pytest
from support.helpers import tiny_model_file

from streamtag.audio.synthetic import SyntheticConfig, demo_piece, generate_clip
from streamtag.commands.demo import make_piece, run_demo
from streamtag.errors import ConfigError

# A window is 3 s long and the daemon's smoothing has a 2 s time constant: from 5 s into a
# section, what is shown should be that section alone.
SETTLED_S = 5.0
SCORES = re.compile(r"\s([\d.]+)-([\d.]+) s  active: (.*?)  top: ")


def test_demo_prints_the_stream_and_ends(tmp_path):
    model = tiny_model_file(tmp_path / "tiny.pt")
    out = io.StringIO()
    assert run_demo(str(model), seconds=6.0, speed=20.0, device="cpu", out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("streamtag demo: 6 s piece, model tiny")
    assert any("active:" in line for line in lines)  # scores lines
    assert "status ended" in lines[-1]


@pytest.fixture(scope="module")
def default_demo():
    """What `streamtag demo` prints with the shipped model and no seed (played fast), and the
    piece's sections."""
    out = io.StringIO()
    assert run_demo(None, seconds=60.0, speed=15.0, device="cpu", out=out) == 0
    lines = out.getvalue().splitlines()
    assert "status ended" in lines[-1]
    windows = []  # (end_s, active tags) of every scores line
    for line in lines:
        match = SCORES.search(line)
        if match:
            active = set() if match[3] == "-" else set(match[3].split(", "))
            windows.append((float(match[2]), active))
    return lines, windows, make_piece(60.0)[1]


def test_on_the_default_piece_the_model_agrees_with_the_truth(default_demo):
    lines, windows, sections = default_demo
    assert len(windows) >= 50
    for start, end, truth in sections:
        inside = [active for end_s, active in windows if start < end_s <= end]
        settled = [active for end_s, active in windows if start + SETTLED_S <= end_s <= end]
        assert settled, (start, end)
        for active in settled:  # every tag on is one the section was made with
            assert active <= set(truth), (start, end, truth, active)
        heard = set().union(*inside)
        assert set(truth) <= heard, (start, end, truth, heard)  # every truth tag switches on
    assert not [line for line in lines if "the model errs" in line]


def test_on_the_default_piece_major_and_minor_are_never_both_on(default_demo):
    _, windows, sections = default_demo
    settled = [active for start, end, _ in sections for end_s, active in windows
               if start + SETTLED_S <= end_s <= end]
    assert settled and not [a for a in settled if {"major", "minor"} <= a]


def test_a_bad_seed_or_phrase_length_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="--seed must be a non-negative integer, got -1"):
        run_demo(None, seed=-1, device="cpu", out=io.StringIO())
    with pytest.raises(ConfigError, match=r"phrase_seconds must be in \[1, 600\] or None"):
        demo_piece(10.0, phrase_seconds=0.5)


def _digest(audio: np.ndarray) -> str:
    # 16-bit, as the data set's FLAC files store it.
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()[:16]


def test_the_training_clips_and_the_default_piece_are_as_they_were():
    # The default recipe's first clips (data seed 1, 6 s), and the piece that installed models'
    # default thresholds are calibrated on: the demo's own changes must leave both alone.
    config = SyntheticConfig(clip_seconds=6.0)
    clips = []
    for i in range(3):
        seed = int(np.random.SeedSequence([1, i]).generate_state(1)[0])
        audio, tags, _ = generate_clip(seed, config)
        clips.append((_digest(audio), tags))
    calibration, sections = demo_piece(30.0, seed=1)
    assert clips == TRAINING_CLIPS
    assert (_digest(calibration), sections) == CALIBRATION_PIECE


# What the generator gives for them (16-bit); the trainer's data sets and the default
# thresholds of installed models depend on these staying the same.
TRAINING_CLIPS = [
    ("411379621e701c71", ["fast", "minor", "dark", "percussive", "dense"]),
    ("23cbd589bc797b21", ["fast", "major", "soft", "dark", "percussive", "plucked"]),
    ("4cbbb3cd52c34152", ["major", "soft", "sparse"]),
]
CALIBRATION_PIECE = ("10f6702699a9ef57", [
    (0.0, 8.546433, ["slow", "minor", "soft", "dark", "sustained", "sparse"]),
    (8.546433, 18.370251, ["minor", "percussive"]),
    (18.370251, 30.0, ["fast", "major", "loud", "bright", "percussive", "plucked", "dense"]),
])
