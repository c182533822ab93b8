"""Source kinds declare themselves (``kind``, ``schemes``, ``spec_help``) and the spec parser, the
help texts, the docs and the daemon's control policy follow ``streamtag.sources.KINDS``: a kind
added there, or one a text forgets, fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from streamtag.daemon.config import ControlConfig
from streamtag.daemon.policy import ControlPolicy
from streamtag.errors import ConfigError, SourceError
from streamtag.sources import KINDS, KNOWN_KINDS, PATH_KIND, parse_source, parse_spec, spec_help

ROOT = Path(__file__).resolve().parents[2]


def run_help(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streamtag", *command, "--help"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(),
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_every_kind_declares_its_name_schemes_and_how_it_is_written():
    assert len({cls.kind for cls in KINDS}) == len(KINDS)
    schemes = [scheme for cls in KINDS for scheme in cls.schemes]
    assert len(set(schemes)) == len(schemes), "two kinds claim one scheme"
    for cls in KINDS:
        assert cls.kind and cls.schemes and cls.spec_help, cls


@pytest.mark.parametrize("spec, kind, target", [
    ("file:/music/a.wav", "file", "/music/a.wav"),
    ("http://radio.example.org/live", "http", "http://radio.example.org/live"),
    ("HTTPS://radio.example.org/live", "http", "HTTPS://radio.example.org/live"),
    ("device:", "device", "default"),
    ("device:2", "device", "2"),
    ("  pipe:  ", "pipe", ""),
    ("pipe:-", "pipe", ""),
])
def test_a_spec_names_its_kind_and_target(spec, kind, target):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target, parsed.text) == (kind, target, spec.strip())


def test_an_existing_path_is_a_file_and_anything_else_is_named_with_every_kind(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    assert parse_spec(str(audio)).kind == PATH_KIND.kind == "file"
    with pytest.raises(SourceError, match=re.escape(f"use one of: {KNOWN_KINDS}")):
        parse_spec("gopher://old.example.org")
    for bad, said in (("file:", "names no file; write file:PATH"),
                      ("pipe:stdin", "write just 'pipe:'")):
        with pytest.raises(SourceError, match=re.escape(said)):
            parse_spec(bad)


def test_a_spec_builds_its_kinds_source_with_its_options():
    source = parse_source("pipe:", rate=8000)
    assert source.kind == "pipe" and type(source).arguments("") == ()
    with pytest.raises(SourceError, match="pipe sources take no option 'loop'"):
        parse_source("pipe:", loop=True)


def test_help_texts_and_the_configuration_reference_name_every_kind():
    assert spec_help() == "file:PATH or a path, http(s)://URL, device:NAME_OR_INDEX or pipe:"
    assert spec_help() in run_help("run")
    rules = ControlPolicy(ControlConfig()).admissions()
    admitted = tuple(cls for cls in KINDS if cls.kind in rules)
    assert spec_help(admitted) in run_help("control", "add")
    assert spec_help(code=True) in (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    daemon_page = (ROOT / "docs" / "daemon.md").read_text(encoding="utf-8")
    for cls in KINDS:
        assert f"| `{cls.spec_help}" in daemon_page, f"docs/daemon.md lists no {cls.kind} spec"


def test_a_kind_the_control_policy_has_no_rule_for_is_refused_by_name(tmp_path):
    policy = ControlPolicy(ControlConfig())
    assert set(policy.admissions()) == {"file", "http", "device"}
    with pytest.raises(ConfigError, match=re.escape(
            "pipe: is not available over the control socket (the daemon's standard input is "
            "not the requester's)")):
        policy.allowed_spec("pipe:", {})
