"""The command line, run as a user would: a real process on a real encoded file."""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess

import numpy as np
from support.helpers import free_port, run_streamtag

from streamtag.audio.files import load_audio, write_audio
from streamtag.audio.testsignals import music_like
from streamtag.cli import build_parser
from streamtag.frontend import LogMelOptions, compute_logmel


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_streamtag(*args, timeout=120)


def test_features_writes_the_frames_of_the_decoded_file(tmp_path):
    audio = tmp_path / "clip.flac"  # lossless, so the expected frames are exact
    signal = music_like(3.0, 16000, seed=6)
    write_audio(audio, signal, 16000)
    out = tmp_path / "frames.npy"
    done = run_cli("features", str(audio), "--preset", "musicnn", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "96 mels" in done.stdout
    frames = np.load(out)
    decoded, rate = load_audio(audio)
    assert rate == 16000 and np.abs(decoded - signal).max() < 1e-4  # 16-bit FLAC
    expected = compute_logmel(decoded, LogMelOptions.preset("musicnn"))
    assert np.array_equal(frames, expected)


def test_features_reports_an_undecodable_file_and_bad_options(tmp_path):
    bad = tmp_path / "not_audio.mp3"
    bad.write_text("this is text, not audio")
    done = run_cli("features", str(bad))
    assert done.returncode == 1  # the work failed: the command line was fine
    assert "not_audio.mp3" in done.stderr
    done = run_cli("features", str(bad), "--options", '{"n_mel": 3}')
    assert done.returncode == 2 and "n_mel" in done.stderr
    audio = tmp_path / "clip.wav"
    write_audio(audio, music_like(1.0, 16000, seed=7), 16000)
    done = run_cli("features", str(audio), "--out", str(tmp_path / "no-folder" / "x.npy"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot write" in done.stderr and "a folder that exists" in done.stderr
    done = run_cli("features", str(audio), "--out", str(tmp_path / "x.frames"))
    assert done.returncode == 0 and f"wrote {tmp_path / 'x.frames'}" in done.stdout
    assert np.load(tmp_path / "x.frames").shape[1] > 0  # the name as given, no .npy added
    # options of the wrong kind were cast (center "no" read as true, n_mels true as 1 band),
    # or a traceback; now each is named with what it takes
    for options, said in (('{"center": "no"}', "center must be true or false, got 'no'"),
                          ('{"n_mels": true}', "n_mels must be a whole number, got True"),
                          ('{"n_mels": 1.5}', "n_mels must be a whole number, got 1.5"),
                          ('[1]', "--options must be a JSON object"),
                          ('{"n_mels": 400, "n_fft": 256}', "covers no FFT bin")):
        done = run_cli("features", str(audio), "--options", options,
                       "--out", str(tmp_path / "y.npy"))
        assert done.returncode == 2 and said in done.stderr, (options, done.stderr)
        assert "Traceback" not in done.stderr


def test_the_models_command_s_summary_names_exactly_its_subcommands():
    """`streamtag --help` lists what `models` does; each word there is a subcommand that runs
    (it once said "inspect" for what is `models info`)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summary = next(c.help for c in commands._choices_actions if c.dest == "models")
    named = re.sub(r"^[^:]*:\s*", "", summary).split(", ")
    models = commands.choices["models"]
    subcommands = next(a for a in models._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(named) == sorted(subcommands.choices), summary


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`streamtag demo | head -2`: once the reader has gone, the next line ends the command
    with exit status 1 and no traceback."""
    demo = run_streamtag("demo", "--seconds", "20", popen=True)
    try:
        for _ in range(2):
            assert demo.stdout.readline()
        demo.stdout.close()  # as head does after its lines
        _, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_the_demo_s_dashboard_stays_up_after_the_piece_until_ctrl_c(tmp_path):
    """`streamtag demo --dashboard`: the page was gone once the piece ended, seconds after its
    address was printed. It stays until Ctrl-C, which ends the demo cleanly."""
    import signal
    import urllib.parse

    port = free_port()
    env = {**os.environ, "BROWSER": "true"}  # webbrowser's choice: a program that does nothing
    demo = run_streamtag("demo", "--seconds", "6", "--speed", "20", "--dashboard",
                         "--dashboard-port", str(port), popen=True, env=env)
    try:
        lines = []
        while "stays up until Ctrl-C" not in (line := demo.stdout.readline()):
            assert line, (lines, demo.stderr.read())
            lines.append(line)
        address = next(line.split("dashboard: ", 1)[1].strip() for line in lines
                       if "dashboard: " in line)
        where = urllib.parse.urlsplit(address)
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        connection.request("GET", "/healthz")
        with connection.getresponse() as reply:
            assert reply.status == 200
        connection.close()
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 0, err
    assert "Traceback" not in err, err
