"""The manylinux wheel of deploy/wheel/build.sh, installed with pip in a container of the bare
base (no compiler, no cmake, no torch), as a user without build tools would: `streamtag demo`
and `streamtag tag` work there, and the wheel's frontend gives this machine's frames.

The wheel is built once per session, or taken from STREAMTAG_WHEEL (CI builds it once in an
earlier step and passes its path)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.frontend import LogMelOptions, compute_logmel
from tests.container.conftest import readable, record_figure
from tests.container.podman import REPO, podman

pytestmark = pytest.mark.container

BUILD_SCRIPT = REPO / "deploy" / "wheel" / "build.sh"
BUILD_TIMEOUT_S = 1800
INSTALL_TIMEOUT_S = 1200
CONTAINER = "streamtag-test-wheel"
BUILD_TOOLS = ("cc", "gcc", "g++", "c++", "clang", "cmake", "ninja", "make")
MB = 1_000_000

FRAMES = """
import base64, sys
from streamtag.audio.testsignals import music_like
from streamtag.frontend import LogMelOptions, compute_logmel
o = LogMelOptions.preset(sys.argv[1])
frames = compute_logmel(music_like(5.0, o.sample_rate, seed=3), o)
print(frames.shape[0], frames.shape[1], base64.b64encode(frames.tobytes()).decode())
"""
MODEL_TAGS = """
from streamtag.catalog.shipped import default_model_path
from streamtag.model.manifest import read_manifest
print(" ".join(read_manifest(default_model_path()).tags))
"""


@pytest.fixture(scope="session")
def wheel(base, tmp_path_factory) -> Path:
    """The wheel: STREAMTAG_WHEEL's, or one deploy/wheel/build.sh builds now."""
    given = os.environ.get("STREAMTAG_WHEEL")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"STREAMTAG_WHEEL={given} is no file"
        return path
    out = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(out)], capture_output=True,
                            text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    [path] = out.glob("*.whl")
    record_figure(f"wheel {path.name}: {path.stat().st_size / MB:.1f} MB, built in "
                  f"{time.monotonic() - started:.0f} s")
    return path


@pytest.fixture(scope="module")
def box(base, wheel, shared_dir):
    """A container of the base with the wheel pip-installed from binaries only; shared_dir is
    its /data (read-only)."""
    podman("rm", "-f", "-t", "0", CONTAINER, check=False)
    podman("run", "-d", "--name", CONTAINER, "--network", "host",
           "--volume", f"{wheel}:/wheels/{wheel.name}:ro", "--volume", f"{shared_dir}:/data:ro",
           base, "sleep", "infinity")
    try:
        started = time.monotonic()
        # --only-binary: nothing may need building, neither streamtag nor any dependency.
        podman("exec", CONTAINER, "python", "-m", "pip", "install", "--quiet", "--no-cache-dir",
               "--only-binary=:all:", f"/wheels/{wheel.name}", timeout=INSTALL_TIMEOUT_S)
        record_figure(f"wheel: pip install in the bare base took {time.monotonic() - started:.0f}"
                      " s (dependencies from the index)")
        yield CONTAINER
    finally:
        podman("rm", "-f", "-t", "0", CONTAINER, check=False, timeout=120)


def run_in(box: str, *command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return podman("exec", box, *command, check=False, timeout=timeout)


def python_in(box: str, code: str, *args: str) -> str:
    result = run_in(box, "python", "-c", code, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_container_has_no_build_tools_and_no_torch(box):
    found = python_in(box, "import shutil, sys; "
                      "print(' '.join(p for p in sys.argv[1:] if shutil.which(p)))", *BUILD_TOOLS)
    assert found.split() == [], "build tools in the bare base"
    where = python_in(box, "import importlib.util as u, streamtag._core as c; "
                      "print(c.__file__, u.find_spec('torch') is None)").split()
    assert where[0].startswith("/usr/local/lib/python3.11/site-packages/streamtag/_core.")
    assert where[1] == "True", "pip installed torch with the wheel"


def test_the_wheels_frontend_gives_this_machines_frames(box):
    # -ffp-contract=off makes the frames the same with any compiler; the double-precision
    # twiddles come from each machine's libm, hence a tolerance far inside librosa's 0.01 dB.
    for preset in ("musicnn", "mtg_jamendo"):
        rows, cols, data = python_in(box, FRAMES, preset).split()
        theirs = np.frombuffer(base64.b64decode(data), np.float32).reshape(int(rows), int(cols))
        o = LogMelOptions.preset(preset)
        ours = compute_logmel(music_like(5.0, o.sample_rate, seed=3), o)
        assert theirs.shape == ours.shape
        assert np.max(np.abs(theirs - ours)) <= 1e-4, preset
        same = "bitwise" if np.array_equal(theirs, ours) else "within 1e-4 dB of"
        record_figure(f"wheel: {preset} frames in the container {same} this machine's")


def test_streamtag_demo_prints_tag_events_and_ends(box):
    result = run_in(box, "streamtag", "demo", "--seconds", "8", "--speed", "16")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("streamtag demo: 8 s piece, model"), result.stdout[:2000]
    tags = python_in(box, MODEL_TAGS).split()
    # After the two header lines (the second lists the piece's own passages): tag events of
    # the model's tags, scores lines, and the stream's end.
    events = [line for line in lines[2:] if ">>> " in line and " ON " in line]
    assert any(name in line.split() for line in events for name in tags), result.stdout[-3000:]
    assert any("active:" in line for line in lines[2:])
    assert "status ended" in lines[-1]


def test_streamtag_tag_names_the_tags_of_a_file(box, shared_dir):
    song = shared_dir / "wheel-song.flac"
    write_audio(song, music_like(12.0, 44100, seed=7), 44100)
    readable(song)
    result = run_in(box, "streamtag", "tag", "--json", "/data/wheel-song.flac")
    assert result.returncode == 0, result.stderr[-3000:]
    [report] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    tags = set(python_in(box, MODEL_TAGS).split())
    assert report["error"] is None
    assert report["duration_s"] == pytest.approx(12.0)
    assert set(report["mean_scores"]) == tags
    assert report["tags"] and set(report["tags"]) <= tags, report["tags"]
    assert {segment["tag"] for segment in report["segments"]} <= tags
