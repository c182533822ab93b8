"""`streamtag run --venue`: what it picks and what it says, with a real PulseAudio server for
the sound card (killed and started again: the card goes away and comes back) and without one
(no card at all)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from support.helpers import free_port, wait_until
from support.servers import PulseServer, require_pulse, stop_process

from streamtag.commands.venue import INSTALL_HINT, venue_model

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "default" / "model.pt"


def test_the_installed_real_music_model_is_picked_by_its_place_in_the_list(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("STREAMTAG_HOME", str(tmp_path))
    name, why = venue_model(None)
    assert name is None and INSTALL_HINT in why and "synthetic" in why
    (tmp_path / "models").mkdir()
    for installed in ("musicnn-mtt", "musicnn-msd", "music"):
        shutil.copy(DEFAULT_MODEL, tmp_path / "models" / f"{installed}.pt")
    assert venue_model(None)[0] == "music"  # the recommended one: MSD's moods and MTT's tags
    (tmp_path / "models" / "music.pt").unlink()
    assert venue_model(None)[0] == "musicnn-msd"  # its tags name moods; MTT's do not
    (tmp_path / "models" / "musicnn-msd.pt").unlink()
    assert venue_model(None)[0] == "musicnn-mtt"
    assert venue_model("my-model.pt") == ("my-model.pt", "model my-model.pt (given)")


def test_without_a_sound_card_run_venue_says_so_and_exits_2(tmp_path):
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path / 'no-server'}",
           "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path),
           "STREAMTAG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "streamtag", "run", "--venue", "--control", "",
                           "--publish", f"tcp://127.0.0.1:{free_port()}"],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir())
    assert done.returncode == 2, done.stderr
    assert "--venue listens to the default sound card" in done.stderr
    assert "give --source" in done.stderr and "Traceback" not in done.stderr


def test_run_venue_serves_the_page_and_says_when_the_card_goes_and_comes_back(tmp_path):
    require_pulse()
    directory = Path(tempfile.mkdtemp(prefix="st-pa-"))
    pulse = PulseServer(directory, music=True)
    pulse.start()
    port = free_port()
    env = {**os.environ, **pulse.env, "STREAMTAG_HOME": str(tmp_path)}  # no model installed
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtag", "run", "--venue", "--dashboard-port", str(port),
         "--publish", f"tcp://127.0.0.1:{free_port()}",
         "--control", f"tcp://127.0.0.1:{free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=tempfile.gettempdir())  # outside the source tree: helpers.run_streamtag says why
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stderr),
                              daemon=True)
    reader.start()

    def said(pattern: str) -> bool:
        return any(re.search(pattern, line) for line in lines) or proc.poll() is not None

    try:
        wait_until(lambda: said(r"open http"), 120, "the venue page's address")
        assert proc.poll() is None, "\n".join(lines)
        text = "\n".join(lines)
        assert "the sound card" in text and "as stream 'venue'" in text
        assert "no real-music model is installed" in text and INSTALL_HINT in text
        url = re.search(r"open (http\S+)", text).group(1)
        assert url == f"http://127.0.0.1:{port}/venue?stream=venue"
        assert "add &theme=light for a light room" in text  # a query to add to, not start
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200 and b"venue.js" in reply.read()
        pulse.kill()  # the sound server dies: the card is gone
        wait_until(lambda: said(r"stream venue: the input is gone"), 60, "the loss said")
        assert proc.poll() is None, "\n".join(lines)
        wait_until(lambda: said(r"cannot open device"), 60, "a reopen attempt that fails")
        pulse.start()
        wait_until(lambda: said(r"stream venue: the input is back"), 90, "the return said")
        assert proc.poll() is None, "\n".join(lines)
        # The reopen attempts while the card was gone wrote nothing of ALSA's or PortAudio's
        # own to the terminal (they did, a few lines on every attempt); only PortAudio's
        # capture thread, as the stream died, may have, before the loss was said.
        gone = next(i for i, line in enumerate(lines) if "the input is gone" in line)
        assert not [line for line in lines if line.startswith("ALSA lib ")], "\n".join(lines)
        assert not [line for line in lines[gone:] if "failed in 'src/hostapi" in line], \
            "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(proc)
        reader.join(10)
        proc.stderr.close()
        pulse.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert proc.returncode == 0, "\n".join(lines)
