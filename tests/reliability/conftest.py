"""Fixtures the reliability tests share with the component tests: real media files, a real
Icecast server fed by ffmpeg, a private PulseAudio server, a local HTTP audio server and a tiny
model file. They are the ones tests/test_sources.py and tests/test_daemon.py define."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:  # tests/ holds helpers.py, test_daemon.py, test_sources.py
    sys.path.insert(0, TESTS)

from test_daemon import model_path  # noqa: E402, F401 - fixtures
from test_sources import audio_server, icecast, media, pulse  # noqa: E402, F401 - fixtures
