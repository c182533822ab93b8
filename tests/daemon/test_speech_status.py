"""Who decides speech, said where a user looks: the daemon's first log line and the status
reply (`streamtag status`), with silero-vad's detector installed and without it."""

from __future__ import annotations

import logging

from support.helpers import make_config
from support.speech_material import silero_wheel

from streamtag.catalog import installed
from streamtag.catalog.shipped import default_model_path
from streamtag.commands.status import format_status
from streamtag.daemon.config import ControlConfig
from streamtag.daemon.daemon import Daemon
from streamtag.engine.config import ContentConfig


def started_daemon(tmp_path, **changes) -> Daemon:
    return Daemon(make_config(default_model_path(), tmp_path,
                              control=ControlConfig(endpoint=""), **changes)).start()


def first_line(caplog) -> logging.LogRecord:
    return next(r for r in caplog.records if r.name == "streamtag.daemon.daemon")


def test_without_the_detector_the_first_line_and_the_status_say_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        daemon = started_daemon(tmp_path)
    try:
        line = first_line(caplog)
        assert line.levelno == logging.WARNING and line.getMessage().startswith("model default")
        assert "content: silero-vad is not installed: the content network decides speech" \
            in line.getMessage()
        # said once: the engine, handed the daemon's plan, does not say it again
        assert sum("not installed" in r.getMessage() for r in caplog.records) == 1
        speech = daemon.status()["model"]["speech"]
        assert "not installed" in speech and "streamtag models install speech" in speech
        assert f"speech   {speech}" in format_status(daemon.status())
    finally:
        daemon.stop()


def test_with_the_detector_the_status_names_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STREAMTAG_HOME", str(tmp_path / "home"))
    installed.install(["speech"], source=silero_wheel(), log=lambda line: None)
    with caplog.at_level(logging.INFO):
        daemon = started_daemon(tmp_path)
    try:
        line = first_line(caplog)
        assert line.levelno == logging.INFO
        assert "content: speech by silero-vad 6.2.3" in line.getMessage()
        assert daemon.status()["model"]["speech"].startswith("speech by silero-vad 6.2.3")
    finally:
        daemon.stop()


def test_with_content_off_no_one_decides_speech(tmp_path):
    daemon = started_daemon(tmp_path, content=ContentConfig(enabled=False))
    try:
        assert daemon.status()["model"]["speech"] is None
        assert not any(line.startswith("speech") for line in format_status(daemon.status()))
    finally:
        daemon.stop()
