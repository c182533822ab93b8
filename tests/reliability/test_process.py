"""The daemon process under fire: SIGTERM while several streams run flat out drains every one;
SIGKILL and a restart give subscribers a new session to notice; a corrupt model file at start
is a clear error with exit code 2 and binds nothing; a corrupt file offered to reload_model is
refused while the old model keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from support.helpers import (
    assert_no_gaps,
    collect,
    free_port,
    make_config,
    run_streamtag,
    started,
    tiny_model_file,
    wait_for_heartbeat,
    wait_until,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ModelError
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber
from tests.reliability.faultkit import final_statuses, of_stream, port_is_free
from tests.reliability.test_network import Watcher


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    files = []
    for i, rate in enumerate((44100, 22050, 16000, 48000)):
        files.append(root / f"m{i}.flac")
        write_audio(files[-1], music_like(8.0, rate, seed=80 + i), rate)
    return files


def daemon_toml(path, publish: str, control: str, sources: list[dict],
                engine: str = "", file_roots: tuple[str, ...] = ()) -> str:
    lines = [f'[publish]\nendpoint = "{publish}"\nheartbeat_s = 0.1\nsndhwm = 20000',
             f'[control]\nendpoint = "{control}"\nfile_roots = {json.dumps(file_roots)}',
             f"[engine]\n{engine}"]
    for source in sources:
        lines.append("[[sources]]\n" + "\n".join(f"{k} = {json.dumps(v)}"
                                                 for k, v in source.items()))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_daemon(config: str, model) -> subprocess.Popen:
    return run_streamtag("run", "--config", config, "--model", str(model), "--device", "cpu",
                         popen=True)


def end_process(proc: subprocess.Popen) -> tuple[str, str]:
    """Kills the process (by its PID) if it is still running; its output."""
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=20)


def test_sigterm_under_load_drains_every_stream(model_path, music, tmp_path):
    publish, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    sources = [{"id": f"loop{i}", "spec": str(music[i]), "loop": True} for i in (0, 1)]
    sources += [{"id": f"play{i}", "spec": str(music[i]), "realtime": True, "speed": 4.0}
                for i in (2, 3)]
    # A window a second of audio: the streams run flat out, the subscriber in this process
    # must not fall so far behind that the publisher drops for it.
    config = daemon_toml(tmp_path / "daemon.toml", publish, control, [], "hop_seconds = 1.0",
                         (str(music[0].parent),))
    ids = {s["id"] for s in sources}
    sub = Subscriber(publish)
    proc = run_daemon(config, model_path)
    try:
        wait_for_heartbeat(sub)
        watcher = Watcher(sub)
        for source in sources:  # added once subscribed, so that every message is seen
            reply = control_request(control, {"cmd": "add_source", **source})
            assert reply["ok"], reply
        for sid in ids:
            watcher.wait_scores(sid, 3, 30)
        proc.send_signal(signal.SIGTERM)
        # The drain must end on its own: 60 s is far beyond the 1-2 s it takes, so only a
        # hang (not a loaded machine) fails here.
        wait_until(lambda: ids <= {m.header.stream for m in list(watcher.messages)
                                   if m.header.msg_type == "status"
                                   and m.body.state in ("ended", "failed")}, 60,
                   "every stream's final status")
        assert proc.wait(60) == 0
        got = watcher.stop()
    finally:
        out, err = end_process(proc)
        sub.close()
    assert sub.gaps == 0
    final = final_statuses(got)
    for sid in ids:
        stream = of_stream(got, sid)
        scores = [m.body for m in stream if m.header.msg_type == "scores"]
        assert final[sid].state == "ended", final[sid].error
        assert final[sid].counters["windows"] == len(scores)
        assert [m.header.seq for m in stream if m.header.msg_type == "scores"] == list(
            range(len(scores)))
        # Drained: the last window reaches the last sample that arrived before the signal.
        assert scores[-1].end_sample == final[sid].counters["samples"]
        assert_no_gaps(stream)
    assert final["loop0"].counters["samples"] > 16000 * 8  # it was looping when stopped


def test_sigkill_and_restart_give_subscribers_a_new_session(model_path, music, tmp_path):
    publish = f"tcp://127.0.0.1:{free_port()}"
    config = daemon_toml(tmp_path / "daemon.toml", publish, f"tcp://127.0.0.1:{free_port()}",
                         [{"id": "radio", "spec": str(music[0]), "realtime": True,
                           "loop": True, "speed": 4.0}])
    sub = Subscriber(publish)
    first = run_daemon(config, model_path)
    second = None
    got = []
    try:
        def scores_from(session_count: int) -> None:
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline, "no scores"
                msg = sub.recv(200)
                if msg is None:
                    continue
                got.append(msg)
                sessions = {m.header.session for m in got if m.header.msg_type == "scores"}
                if len(sessions) == session_count and sum(
                        m.header.msg_type == "scores" and m.header.session == msg.header.session
                        for m in got) >= 3:
                    return

        scores_from(1)
        first.kill()  # SIGKILL: no drain, no final status
        assert first.wait(10) == -signal.SIGKILL
        second = run_daemon(config, model_path)  # the same endpoints: the ports are free again
        scores_from(2)
    finally:
        for proc in (first, second):
            if proc is not None:
                end_process(proc)
        sub.close()
    sessions = list(dict.fromkeys(m.header.session for m in got
                                  if m.header.msg_type != "heartbeat"))
    assert len(sessions) == 2
    flagged = [m for m in got if m.restarted]
    assert len(flagged) == 1 and flagged[0].header.session == sessions[1]
    assert sub.restarts == 1
    new = [m for m in got if m.header.session == sessions[1] and m.header.msg_type == "scores"]
    # A fresh session counts from 0: scores the subscriber missed while it reconnected are
    # reported as the first message's gap, not taken for the old session's.
    assert new[0].gap == new[0].header.seq < 8
    # A subscriber reconnects some time after the new daemon binds, so it may miss the first
    # messages of the new session (the "starting" status); it is told, and nothing else.
    late_start = [m for m in got if m.gap]
    assert all(m.header.session == sessions[1] and m.gap == m.header.seq for m in late_start)
    beats = {m.header.session for m in got if m.header.msg_type == "heartbeat"}
    assert beats == set(sessions)


def truncated_model(model_path, path) -> str:
    data = model_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def test_a_corrupt_model_at_start_exits_2_naming_it_and_binds_nothing(model_path, tmp_path):
    bad = truncated_model(model_path, tmp_path / "truncated.pt")
    config = make_config(bad, tmp_path)
    with pytest.raises(ModelError, match="truncated.pt"):
        Daemon(config).start()
    assert port_is_free(config.publish.endpoint) and port_is_free(config.control.endpoint)
    publish = f"tcp://127.0.0.1:{free_port()}"
    proc = run_streamtag("run", "--model", bad, "--publish", publish, "--control",
                         f"tcp://127.0.0.1:{free_port()}", "--device", "cpu", timeout=60)
    assert proc.returncode == 2
    assert "truncated.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert port_is_free(publish)


def test_a_corrupt_reload_is_refused_and_the_old_model_serves_on(model_path, music, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    other_rate = tiny_model_file(tmp_path / "rate12k.pt", preset="mtg_jamendo", name="12k")
    offers = {truncated_model(model_path, tmp_path / "half.pt"): "half.pt",
              str(junk): "junk.pt", str(other_rate): "rate12k.pt",
              str(tmp_path / "missing.pt"): "missing.pt"}
    daemon, sub = started(make_config(model_path, tmp_path))
    control = daemon.control.endpoint
    try:
        reply = control_request(control, {"cmd": "add_source", "id": "live",
                                          "spec": str(music[0]), "realtime": True,
                                          "speed": 2.0})
        assert reply["ok"], reply
        windows = 0
        for path, name in offers.items():
            wait_until(lambda n=windows: daemon.status()["streams"]["live"]["counters"]
                       .get("windows", 0) > n + 1, 10, "windows between reloads")
            reply = control_request(control, {"cmd": "reload_model", "path": path},
                                    timeout_ms=10000)
            assert not reply["ok"] and name in reply["error"], reply
            windows = daemon.status()["streams"]["live"]["counters"]["windows"]
        got = collect(sub, {"live"}, timeout_s=20)
        status = control_request(control, {"cmd": "status"})
    finally:
        daemon.stop()
        sub.close()
    assert status["model"]["name"] == "tiny"
    stream = of_stream(got, "live")
    scores = [m.body for m in stream if m.header.msg_type == "scores"]
    final = final_statuses(got)["live"]
    assert final.state == "ended" and final.counters["dropped_windows"] == 0
    assert len(scores) == final.counters["windows"]
    assert {s.model.name for s in scores} == {"tiny"}
    assert np.isfinite([s.raw for s in scores]).all()
    assert_no_gaps(stream)
