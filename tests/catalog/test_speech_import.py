"""silero-vad's speech detector into the model store: from its real wheel (fetched without its
torch requirement), checked by hash, with its licence recorded; and what `models list` says
with and without it."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
from support.speech_material import silero_wheel

from streamtag.catalog import installed
from streamtag.cli import main
from streamtag.engine.speech import KNOWN_GRAPHS, SPEECH_FILE, SpeechPlan, speech_path
from streamtag.errors import ModelError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(installed.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def test_models_install_speech_takes_the_graph_from_the_wheel(home, capsys):
    wheel = silero_wheel()
    assert main(["models", "install", "speech", "--from", str(wheel)]) == 0
    assert "speech: installed" in capsys.readouterr().out
    path = home / "models" / SPEECH_FILE
    assert path == speech_path() and path.stat().st_mode & 0o077 == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() in KNOWN_GRAPHS
    record = json.loads((home / "models" / "silero-vad.json").read_text())
    assert record["licence"] == "MIT" and "Permission is hereby granted" in record["licence_text"]
    assert record["source"].startswith(wheel.name)
    # only the graph was taken: nothing of the wheel's Python (nor its torch) is in the store
    assert sorted(p.name for p in (home / "models").iterdir()) == ["silero-vad.json",
                                                                   SPEECH_FILE]
    plan = SpeechPlan.installed()
    assert plan.detector is not None and "silero-vad 6.2.3" in plan.note
    # `models list` names it and no longer offers it
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert ("speech detector: silero-vad 6.2.3 (silero_vad/data/silero_vad.onnx), MIT "
            "licence, at") in out
    assert "speech" not in out.split("can be installed:")[-1]
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["speech"]["installed"] is True and "speech" not in listed["installable"]


def test_models_list_says_when_the_detector_is_missing(home, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert ("speech detector: not installed: the content network decides speech" in out
            and "streamtag models install speech" in out)
    assert "speech" in out.split("can be installed:")[-1]
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["speech"]["installed"] is False and "speech" in listed["installable"]


def test_a_wheel_with_another_graph_is_refused_and_nothing_is_written(home, tmp_path):
    wheel = tmp_path / "silero_vad-6.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("silero_vad/data/silero_vad.onnx", b"another graph")
    with pytest.raises(ModelError, match="sha256 .* is not the one of silero-vad==6.2.3"):
        installed.install(["speech"], source=wheel, log=lambda line: None)
    assert not speech_path().exists()


def test_a_wheel_without_the_graph_says_what_to_give(home, tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/__init__.py", b"")
    with pytest.raises(ModelError, match="no silero_vad/data/silero_vad.onnx in it"):
        installed.install(["speech"], source=wheel, log=lambda line: None)
