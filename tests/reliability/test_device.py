"""A capture device whose sound server dies: a private PulseAudio server is killed during
capture and started again. The daemon reports the loss ("reconnecting" with the reason) and
reopens the device when the server returns; with reconnect=false the stream fails instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from faultkit import of_stream
from helpers import wait_until
from test_daemon import assert_no_gaps, make_config, started
from test_network import Watcher
from test_sources import require_pulse, stop_process

from streamtag.config import SourceConfig
from streamtag.testsignals import music_like


class PulseServer:
    """A private PulseAudio daemon with a 48 kHz mono float null sink ``testsink``; it can be
    killed (SIGKILL, by PID) and started again on the same socket."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "native"
        self.env = {"HOME": str(directory), "XDG_RUNTIME_DIR": str(directory),
                    "PULSE_SERVER": f"unix:{self.socket}", "PULSE_SOURCE": "testsink.monitor",
                    "PULSE_SINK": "testsink"}
        self.proc: subprocess.Popen | None = None
        self.player: subprocess.Popen | None = None
        self._log = open(directory / "pulseaudio.log", "ab")  # closed in close()
        self.music = directory / "music.raw"
        self.music.write_bytes(music_like(30.0, 48000, seed=51).astype("<f4").tobytes())

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no",
             "--log-target=stderr",
             f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
             "--load=module-null-sink sink_name=testsink rate=48000 channels=1 "
             "format=float32le"],
            env={**os.environ, **self.env}, stdout=self._log, stderr=self._log,
            stdin=subprocess.DEVNULL)

        def ready() -> bool:
            if self.proc.poll() is not None:
                return True
            return subprocess.run(["pactl", "info"], env={**os.environ, **self.env},
                                  timeout=5, capture_output=True).returncode == 0

        wait_until(ready, 10, "pulseaudio to start", interval=0.05)
        assert self.proc.poll() is None, (self.directory / "pulseaudio.log").read_text()
        self.player = subprocess.Popen(  # music into the sink whose monitor is captured
            ["pacat", "--playback", "--raw", "--device=testsink", "--format=float32le",
             "--rate=48000", "--channels=1", str(self.music)],
            env={**os.environ, **self.env}, stdout=self._log, stderr=self._log,
            stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        stop_process(self.player)  # it lost its server too

    def close(self) -> None:
        for proc in (self.player, self.proc):
            if proc is not None:
                stop_process(proc)
        self._log.close()


@pytest.fixture
def pulse_server(monkeypatch):
    sd = require_pulse()
    directory = Path(tempfile.mkdtemp(prefix="st-pa-"))  # short: unix socket paths are limited
    server = PulseServer(directory)
    try:
        server.start()
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        sd._terminate()  # PortAudio lists devices once; make it look again with the new env
        sd._initialize()
        yield server
    finally:
        server.close()
        monkeypatch.undo()
        try:
            sd._terminate()
            sd._initialize()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def test_the_sound_server_dies_during_capture_and_returns(pulse_server, model_path, tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    watcher = Watcher(sub)
    device = {"device_rate": 48000, "channels": 1, "blocksize": 512, "stall_timeout_s": 2.0}
    try:
        daemon.add_source(SourceConfig("room", "device:pulse", {
            **device, "initial_backoff_s": 0.1, "max_backoff_s": 0.4}))
        daemon.add_source(SourceConfig("strict", "device:pulse", {**device,
                                                                   "reconnect": False}))
        watcher.wait_scores("room", 3, 20)
        watcher.wait_scores("strict", 3, 20)
        pulse_server.kill()
        at = watcher.wait_state("room", "reconnecting", 0, 10)
        watcher.wait_state("strict", "failed", 0, 10)
        wait_until(lambda: watcher.states("room").count("reconnecting") >= 3, 10,
                   "reopen attempts while the server is gone")
        before = watcher.scores("room")
        time.sleep(0.3)
        assert watcher.scores("room") == before  # no audio while it is gone
        pulse_server.start()
        watcher.wait_state("room", "running", at, 15)
        watcher.wait_scores("room", before + 3, 20)
        daemon.stop()
        wait_until(lambda: watcher.states("room")[-1:] == ["ended"], 10, "room to end")
    finally:
        daemon.stop()
        messages = watcher.stop()
        sub.close()
    room = of_stream(messages, "room")
    states = [m.body.state for m in room if m.header.msg_type == "status"]
    collapsed = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert collapsed == ["starting", "running", "reconnecting", "running", "ended"], states
    lost = next(m.body for m in room if m.header.msg_type == "status"
                and m.body.state == "reconnecting")
    assert "stopped delivering audio" in lost.error and "pulse" in lost.error
    back = [m.body for m in room if m.header.msg_type == "status" and m.body.state == "running"]
    assert back[-1].counters["reconnects"] >= 1
    assert_no_gaps(room)
    scores = [m.body for m in room if m.header.msg_type == "scores"]
    starts = [s.start_sample for s in scores]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert np.isfinite([s.raw for s in scores]).all()
    strict = [m.body for m in of_stream(messages, "strict", "status")]
    assert [s.state for s in strict] == ["starting", "running", "failed"]
    assert "pulse" in strict[-1].error and "stopped delivering audio" in strict[-1].error
