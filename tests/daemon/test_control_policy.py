"""The control socket's allow-list on its own: what an ``add_source`` or ``reload_model``
request may open or load under each rule of ``[control]``, on real files and links (no daemon,
no sockets; tests/test_control_security.py asks a running daemon the same)."""

from __future__ import annotations

import re

import pytest

from streamtag.daemon.config import ControlConfig
from streamtag.daemon.policy import ControlPolicy
from streamtag.errors import ConfigError, ModelError
from streamtag.sources.hosts import HostPolicy


@pytest.fixture
def roots(tmp_path):
    inside, outside = tmp_path / "music", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "a.wav").write_bytes(b"RIFF")
    (outside / "secret.wav").write_bytes(b"RIFF")
    (inside / "link.wav").symlink_to(outside / "secret.wav")
    return inside, outside


def test_a_file_below_the_roots_is_opened_by_its_resolved_path(roots):
    inside, _ = roots
    policy = ControlPolicy(ControlConfig(file_roots=(str(inside),)))
    spec, options = policy.allowed_spec(str(inside / "." / "a.wav"), {"loop": True})
    assert (spec.kind, spec.target, options) == ("file", str(inside / "a.wav"), {"loop": True})


def test_files_outside_the_roots_get_one_answer_whether_they_exist_or_not(roots):
    inside, outside = roots
    policy = ControlPolicy(ControlConfig(file_roots=(str(inside),)))
    answers = set()
    for text in (str(outside / "secret.wav"), str(inside / "link.wav"),
                 f"file:{outside / 'secret.wav'}", str(outside / "missing.wav")):
        with pytest.raises(ConfigError, match="--allow-file-root DIR") as refused:
            policy.allowed_spec(text, {})
        answers.add(str(refused.value).replace(repr(text), "TEXT"))
    assert len(answers) == 1, answers
    with pytest.raises(ConfigError, match="there is no such file below control.file_roots"):
        policy.allowed_spec(str(inside / "missing.wav"), {})


def test_devices_only_with_allow_devices_and_never_a_pipe():
    with pytest.raises(ConfigError, match="control.allow_devices = true"):
        ControlPolicy(ControlConfig()).allowed_spec("device:0", {})
    spec, _ = ControlPolicy(ControlConfig(allow_devices=True)).allowed_spec("device:0", {})
    assert (spec.kind, spec.target) == ("device", "0")
    for policy in (ControlPolicy(ControlConfig()),
                   ControlPolicy(ControlConfig(allow_devices=True, file_roots=("/",)))):
        assert "pipe" not in policy.admissions()
        with pytest.raises(ConfigError, match=re.escape("standard input is not the requester's")):
            policy.allowed_spec("pipe:", {})


def test_a_url_passes_the_host_policy_which_the_source_then_carries():
    with pytest.raises(ConfigError, match="add_source refuses 'http://127.0.0.1:8000/live'"):
        ControlPolicy(ControlConfig()).allowed_spec("http://127.0.0.1:8000/live", {})
    policy = ControlPolicy(ControlConfig(allow_private_hosts=True, deny_hosts=("10.0.0.0/8",)))
    spec, options = policy.allowed_spec("http://127.0.0.1:8000/live?token=s3cret", {})
    assert spec.kind == "http" and isinstance(options["host_policy"], HostPolicy)
    assert options["host_policy"] is policy.host_policy
    with pytest.raises(ConfigError) as refused:
        policy.allowed_spec("http://10.1.2.3/live?token=s3cret", {})
    assert "s3cret" not in str(refused.value)  # a URL's secrets stay out of the answer


def test_a_model_loads_from_the_model_roots_only(tmp_path):
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    elsewhere.mkdir()
    (models / "m.pt").write_bytes(b"model")
    (elsewhere / "m.pt").write_bytes(b"model")
    policy = ControlPolicy(ControlConfig(model_roots=(str(models),)))
    assert policy.allowed_model(str(models / "m.pt")) == str(models / "m.pt")
    for text in (str(elsewhere / "m.pt"), str(models / "missing.pt"), str(models)):
        with pytest.raises(ModelError, match="a model file under control.model_roots"):
            policy.allowed_model(text)
    with pytest.raises(ModelError, match="control.model_roots"):
        ControlPolicy(ControlConfig()).allowed_model(str(models / "m.pt"))
