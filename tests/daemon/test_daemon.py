"""The daemon end to end: real decoding, a real TorchScript file, real ZeroMQ on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
import urllib.request

import numpy as np
import zmq
from support.helpers import (
    assert_no_gaps,
    collect,
    free_port,
    make_config,
    offline,
    run_streamtag,
    started,
    tiny_model_file,
    wait_for_heartbeat,
)

from streamtag.daemon.config import (
    MetricsConfig,
    PublishConfig,
    SourceConfig,
)
from streamtag.daemon.daemon import Daemon
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber


def test_a_file_stream_end_to_end(model_path, audio_files, tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}"))
        got = [m for m in collect(sub, {"a"}) if m.header.stream == "a"]
    finally:
        daemon.stop()
        sub.close()
    assert_no_gaps(got)
    scores = [m for m in got if m.header.msg_type == "scores"]
    expected = offline(model_path, audio_files["a"])
    assert len(scores) == len(expected)
    np.testing.assert_allclose([m.body.raw for m in scores], expected, atol=1e-4)
    assert got[-1].header.msg_type == "status" and got[-1].body.state == "ended"
    assert got[-1].body.counters["windows"] == len(expected)
    active: set[str] = set()  # events replay to the active sets the scores carry
    for m in got:
        if m.header.msg_type == "event":
            (active.add if m.body.state == "on" else active.discard)(m.body.tag)
        elif m.header.msg_type == "scores":
            assert set(m.body.active) == active
    assert active == set()  # the end of the stream turns everything off


def test_sources_taking_one_turn_still_each_score_all_their_audio(model_path, audio_files,
                                                                  tmp_path):
    """Six file sources and one at playback speed share one turn (decoders = 1); the engine
    keeps at most one window per stream waiting, so the file sources give their turn up
    while they wait for it as well as between blocks: every stream still scores all of its
    audio, exactly as offline, and ends."""
    config = make_config(model_path, tmp_path)
    config = dataclasses.replace(config, engine=dataclasses.replace(
        config.engine, decoders=1, max_pending_windows=1, max_batch=2))
    daemon, sub = started(config)
    names = {f"f{i}": audio_files["ab"[i % 2]] for i in range(6)}
    try:
        daemon.add_source(SourceConfig("paced", f"file:{audio_files['b']}",
                                       {"realtime": True, "speed": 2.0}))
        for sid, path in names.items():
            daemon.add_source(SourceConfig(sid, f"file:{path}"))
        got = collect(sub, {"paced", *names})
    finally:
        daemon.stop()
        sub.close()
    for sid, path in {**names, "paced": audio_files["b"]}.items():
        mine = [m for m in got if m.header.stream == sid]
        assert_no_gaps(mine)
        scores = [m.body.raw for m in mine if m.header.msg_type == "scores"]
        np.testing.assert_allclose(scores, offline(model_path, path), atol=1e-4, err_msg=sid)
        assert mine[-1].body.state == "ended"


def test_a_corrupt_file_fails_its_stream_only(model_path, audio_files, tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("bad", str(audio_files["corrupt"])))
        daemon.add_source(SourceConfig("good", str(audio_files["b"])))
        got = collect(sub, {"bad", "good"})
    finally:
        daemon.stop()
        sub.close()
    final = {m.header.stream: m.body for m in got if m.header.msg_type == "status"
             and m.body.state in ("ended", "failed")}
    assert final["bad"].state == "failed" and "corrupt.mp3" in final["bad"].error
    assert final["good"].state == "ended"
    good_scores = [m for m in got if m.header.stream == "good" and m.header.msg_type == "scores"]
    assert len(good_scores) == len(offline(model_path, audio_files["b"]))


def test_a_subscriber_that_never_reads_does_not_hold_back_the_others(model_path, audio_files,
                                                                      tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(daemon.publisher.endpoint)
    try:
        for name in ("a", "b"):
            daemon.add_source(SourceConfig(name, str(audio_files[name])))
        got = collect(sub, {"a", "b"})
    finally:
        daemon.stop()
        sub.close()
        stalled.close(linger=0)
    assert sub.gaps == 0
    assert sum(m.header.msg_type == "scores" for m in got) == (
        len(offline(model_path, audio_files["a"])) + len(offline(model_path, audio_files["b"])))


def test_control_socket_snapshot_add_source_and_reload(model_path, audio_files, tmp_path):
    other = tiny_model_file(tmp_path / "other.pt", seed=3, name="other")
    config = make_config(model_path, tmp_path)
    config = dataclasses.replace(config, control=dataclasses.replace(
        config.control, model_roots=(str(tmp_path),)))  # where reload_model may load from
    daemon, sub = started(config)
    control = daemon.control.endpoint
    try:
        reply = control_request(control, {"cmd": "add_source", "id": "a",
                                          "spec": str(audio_files["a"]), "realtime": True})
        assert reply["ok"], reply
        outside = control_request(control, {"cmd": "add_source", "id": "x",
                                            "spec": "/etc/passwd"})
        assert not outside["ok"] and "file_roots" in outside["error"]
        missing = control_request(control, {"cmd": "add_source", "id": "m",
                                            "spec": str(tmp_path / "missing.flac")})
        assert not missing["ok"] and "no such file below control.file_roots" in \
            missing["error"] and "pipe:" not in missing["error"], missing
        time.sleep(1.5)
        snap = control_request(control, {"cmd": "snapshot"})
        assert snap["ok"] and snap["streams"]["a"]["windows"] > 0
        assert snap["model"]["tags"] == ["calm", "loud", "bright", "dark"]
        bad = control_request(control, {"cmd": "reload_model", "path": str(audio_files["b"])})
        assert not bad["ok"] and "b.flac" in bad["error"]  # refused; the old model serves on
        swapped = control_request(control, {"cmd": "reload_model", "path": str(other)},
                                  timeout_ms=10000)
        assert swapped["ok"] and swapped["model"]["name"] == "other"
        got = [m for m in collect(sub, {"a"}) if m.header.stream == "a"]
        status = control_request(control, {"cmd": "status"})
        assert status["streams"]["a"]["state"] == "ended"
        # A refusal is said in its own words, not with the exception's class name.
        assert not bad["ok"] and "Error:" not in bad["error"], bad
        unknown = control_request(control, {"cmd": "remove_source", "id": "nosuch"})
        assert unknown == {"ok": False, "error": "no source with id 'nosuch'; the daemon's "
                                                 "streams: a"}  # ended, and listed as that
        assert control_request(control, {"cmd": "remove_source"}) == {
            "ok": False, "error": "remove_source needs a string field id"}
        # Removing an ended stream forgets it: it leaves status (it did nothing, said ok).
        assert control_request(control, {"cmd": "remove_source", "id": "a"}) == {
            "ok": True, "id": "a", "removed": "ended"}
        assert "a" not in control_request(control, {"cmd": "status"})["streams"]
    finally:
        daemon.stop()
        sub.close()
    scores = [m for m in got if m.header.msg_type == "scores"]
    assert_no_gaps(got)
    assert len(scores) == len(offline(model_path, audio_files["a"]))  # no window lost
    names = [m.body.model.name for m in scores]
    assert names[0] == "tiny" and names[-1] == "other"


def test_prometheus_metrics(model_path, audio_files, tmp_path):
    port = free_port()
    daemon, sub = started(make_config(model_path, tmp_path,
                                      metrics=MetricsConfig(port=port)))
    try:
        daemon.add_source(SourceConfig("a", str(audio_files["b"])))
        collect(sub, {"a"})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        daemon.stop()
        sub.close()
    text = text.decode()
    windows = len(offline(model_path, audio_files["b"]))
    assert f'streamtag_windows_total{{stream="a"}} {float(windows)}' in text
    assert "streamtag_batch_size_bucket" in text
    assert 'streamtag_window_latency_seconds_count{stream="a"}' in text
    assert 'streamtag_stream_state{state="ended",stream="a"} 1.0' in text


def run_cli(*args: str) -> subprocess.Popen:
    return run_streamtag(*args, popen=True)


def test_sigterm_drains_the_last_window_and_exits_cleanly(model_path, audio_files, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[publish]\nendpoint = "{endpoint}"\nheartbeat_s = 0.1\n'
                      f'[control]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                      f'file_roots = ["{tmp_path}", "{audio_files["a"].parent}"]\n')
    sub = Subscriber(endpoint)
    proc = run_cli("run", "--config", str(config), "--model", str(model_path), "--device", "cpu")
    try:
        wait_for_heartbeat(sub)
        control = json.dumps({"cmd": "add_source", "id": "live", "realtime": True,
                              "spec": str(audio_files["a"])})
        ctl_endpoint = config.read_text().split('endpoint = "')[2].split('"')[0]
        assert control_request(ctl_endpoint, json.loads(control))["ok"]
        scores = 0
        while scores < 3:
            msg = sub.recv(5000)
            assert msg is not None, "no scores from the daemon"
            scores += msg.header.msg_type == "scores"
        proc.send_signal(signal.SIGTERM)
        got = collect(sub, {"live"}, timeout_s=20)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        sub.close()
    live = [m for m in got if m.header.stream == "live"]
    last_scores = [m for m in live if m.header.msg_type == "scores"][-1]
    assert live[-1].body.state == "ended"
    # The last window reaches the last audio that arrived before the signal, not a window end.
    assert last_scores.body.end_sample == live[-1].body.counters["samples"]


def test_a_corrupt_model_file_is_a_clear_error_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_cli("run", "--model", str(bad), "--publish", f"tcp://127.0.0.1:{free_port()}")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "bad.pt" in err


def test_two_daemons_behind_a_proxy_share_one_subscriber_endpoint(model_path, audio_files,
                                                                  tmp_path):
    import dataclasses
    import threading

    from streamtag.wire.proxy import run_proxy

    stop = threading.Event()
    bound: dict[str, str] = {}
    ready = threading.Event()

    def on_ready(frontend, backend) -> None:
        bound.update(frontend=frontend, backend=backend)
        ready.set()

    proxy = threading.Thread(target=run_proxy, kwargs={
        "frontend": "tcp://127.0.0.1:*", "backend": "tcp://127.0.0.1:*", "stop_event": stop,
        "ready": on_ready}, daemon=True)
    proxy.start()
    assert ready.wait(10)
    sub = Subscriber(bound["backend"])
    daemons = []
    try:
        for name in ("a", "b"):  # both publish by connecting to the proxy's frontend
            config = dataclasses.replace(
                make_config(model_path, tmp_path / name),
                publish=PublishConfig(endpoint=bound["frontend"], connect=True, heartbeat_s=0.1))
            daemons.append(Daemon(config).start())
        wait_for_heartbeat(sub)
        time.sleep(0.5)  # both daemons' links to the proxy carry the subscription by now
        for name, daemon in zip(("a", "b"), daemons, strict=True):
            daemon.add_source(SourceConfig(name, str(audio_files["b"])))
        got = collect(sub, {"a", "b"})
    finally:
        for daemon in daemons:
            daemon.stop()
        sub.close()
        stop.set()
        proxy.join(5)
    sessions = {m.header.stream: m.header.session for m in got if m.header.stream in "ab"}
    assert sessions["a"] != sessions["b"]  # two daemons, one endpoint
    expected = len(offline(model_path, audio_files["b"]))
    for name in ("a", "b"):
        assert sum(m.header.stream == name and m.header.msg_type == "scores" for m in got) \
            == expected
    assert sub.gaps == 0
