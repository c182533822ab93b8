"""The control socket under attack: what a peer may ask the daemon, and what it may not.

Each test is one attack from the "Untrusted streams and peers" review, against real daemons on
127.0.0.1 (in process, or ``streamtag run`` where the process itself is measured): control
without its token; a token file that others can read; a model file that runs code when it is
loaded; paths that probe the host; a spec whose blank hides a file outside the roots; a
microphone, a loopback web server, a pipe; a flood of streams; a 200 MB frame; a subscriber's
CURVE key used for control; a socket bound beyond loopback without keys; a secret key file that
others could read while it was written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
import zmq
from support.helpers import (
    free_port,
    make_config,
    run_python,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)
from torch import nn

from streamtag.catalog.installed import HOME_ENV
from streamtag.daemon import daemon as daemon_module
from streamtag.daemon.config import MetricsConfig, SecurityConfig
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ConfigError
from streamtag.wire.control import KeyRefused, control_request
from streamtag.wire.security import client_curve, generate_keys

REFUSED = "not authorised"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A streamtag folder of the test's own: the daemon's token file and the one its clients
    find are there, as they would be for one user on one machine."""
    folder = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV, str(folder))
    return folder


def start(model_path, tmp_path, *, security: SecurityConfig | None = None,
          metrics: MetricsConfig | None = None, **control) -> Daemon:
    """A daemon on 127.0.0.1 whose [control] section takes ``control``'s changes."""
    config = make_config(model_path, tmp_path)
    changes = {"control": dataclasses.replace(config.control, **control)}
    if security is not None:
        changes["security"] = security
    if metrics is not None:
        changes["metrics"] = metrics
    return Daemon(dataclasses.replace(config, **changes)).start()


def raw_request(endpoint: str, payload: dict | bytes, timeout_ms: int = 2000) -> dict:
    """One request sent exactly as given (no token added), on a plain REQ socket."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        if not sock.poll(timeout_ms, zmq.POLLIN):
            raise TimeoutError(f"no reply within {timeout_ms} ms")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)


def signed_request(endpoint: str, request: dict, token: str, nonce: str | None = None,
                   timeout_ms: int = 2000) -> dict:
    """One request signed as docs/protocol.md says, on a plain REQ socket: a challenge, then
    [{"nonce", "mac"}, request]; ``nonce`` replaces the one the daemon gave."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(b'{"cmd":"challenge"}')
        assert sock.poll(timeout_ms, zmq.POLLIN), "no challenge"
        given = json.loads(sock.recv())["nonce"]
        nonce = nonce or given
        data = json.dumps(request).encode()
        mac = hmac.new(token.encode(), nonce.encode() + data, hashlib.sha256).hexdigest()
        sock.send_multipart([json.dumps({"nonce": nonce, "mac": mac}).encode(), data])
        assert sock.poll(timeout_ms, zmq.POLLIN), "no reply"
        frames = sock.recv_multipart()
        if len(frames) == 2:  # signed back: over the nonce, our mac and the reply's bytes
            expected = hmac.new(token.encode(), nonce.encode() + mac.encode() + frames[1],
                                hashlib.sha256).hexdigest()
            assert json.loads(frames[0])["mac"] == expected
        return json.loads(frames[-1])
    finally:
        sock.close(linger=0)


def refused(reply: dict, words: str) -> bool:
    return reply["ok"] is False and words in reply["error"]


# -- authority ------------------------------------------------------------------------------


def test_a_request_without_the_right_token_is_refused_and_nothing_runs(model_path, audio_files,
                                                                       tmp_path, home):
    roots = tmp_path / "models"
    roots.mkdir()
    other = tiny_model_file(roots / "other.pt", seed=3, name="other")
    daemon = start(model_path, tmp_path, model_roots=(str(roots),))
    control = daemon.control.endpoint
    try:
        as_read = (home / "control.token").read_text()
        requests = [{"cmd": "ping"}, {"cmd": "status"},
                    {"cmd": "add_source", "id": "x", "spec": str(audio_files["a"])},
                    {"cmd": "reload_model", "path": str(other)}]
        # the right token in clear is refused too: it is never to travel
        for token in (None, "", "0" * 64, 12345, ["a"], as_read, as_read.strip(), "\ud800"):
            for request in requests:
                sent = request if token is None else {**request, "token": token}
                reply = raw_request(control, sent)
                assert refused(reply, REFUSED), (sent, reply)
                assert str(home / "control.token") in reply["error"]
                assert "never sent" in reply["error"]
                assert set(reply) == {"ok", "error"}  # one refusal, nothing else
        # signed with another token, or over a nonce the daemon did not give: refused
        assert refused(control_request(control, {"cmd": "ping"}, token="0" * 64), REFUSED)
        assert refused(signed_request(control, {"cmd": "ping"}, as_read.strip(),
                                      nonce="a" * 64), "nonce is unknown")
        assert "x" not in daemon.status()["streams"] and daemon.model.name == "tiny"
        assert daemon.control.refused == 34
        # The streamtag client finds the token by itself and signs; a client in another
        # language signs with the file's text as it reads it, blanks around it taken off.
        assert signed_request(control, {"cmd": "ping"}, as_read.strip())["ok"]
        assert control_request(control, {"cmd": "ping"})["ok"]
        reply = control_request(control, {"cmd": "add_source", "id": "x",
                                          "spec": str(audio_files["b"])})
        assert reply["ok"], reply
    finally:
        daemon.stop()


def test_the_token_file_is_made_private_new_at_each_start_unless_pinned(model_path, tmp_path,
                                                                        home):
    daemon = start(model_path, tmp_path)
    daemon.stop()
    made = home / "control.token"
    assert made.stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    first = made.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", first)
    assert not list(home.glob(".*.tmp"))  # the temporary file it was written through is gone
    daemon = start(model_path, tmp_path)
    try:  # a new start, a new token: one learnt before is worth nothing now
        assert made.read_text() != first
        assert refused(control_request(daemon.control.endpoint, {"cmd": "ping"},
                                       token=first.strip()), REFUSED)
        assert control_request(daemon.control.endpoint, {"cmd": "ping"})["ok"]
    finally:
        daemon.stop()

    chosen = tmp_path / "etc" / "streamtag.token"
    chosen.parent.mkdir()
    chosen.write_text("f" * 64 + "\n")
    chosen.chmod(0o644)
    for pin in (False, True):
        with pytest.raises(ConfigError) as refusal:
            start(model_path, tmp_path, token_file=str(chosen), pin_token=pin)
        assert str(chosen) in str(refusal.value) and f"chmod 600 {chosen}" in str(refusal.value)
    chosen.chmod(0o600)
    daemon = start(model_path, tmp_path, token_file=str(chosen), pin_token=True)
    try:  # the token in the file is the one: given explicitly, it is served
        endpoint = daemon.control.endpoint
        assert control_request(endpoint, {"cmd": "ping"}, token="f" * 64)["ok"]
        assert refused(control_request(endpoint, {"cmd": "ping"}), REFUSED)  # home's is not
    finally:
        daemon.stop()
    assert chosen.read_text() == "f" * 64 + "\n"  # pinned: kept across starts


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_another_user_planted_stops_the_daemon(model_path, tmp_path):
    # Another user (nobody) made the token file first, mode 0600, with a token it knows, in a
    # folder open to all: the daemon took it and that user controlled it.
    planted = tmp_path / "shared" / "control.token"
    planted.parent.mkdir()
    planted.parent.chmod(0o1777)
    planted.write_text("e" * 64 + "\n")
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)
    with pytest.raises(ConfigError) as refusal:
        start(model_path, tmp_path, token_file=str(planted))
    message = str(refusal.value)
    assert str(planted) in message and "belongs to another user (uid 65534" in message
    assert "remove it" in message


# -- what reload_model may load ---------------------------------------------------------------


class Planted(nn.Module):
    """A TorchScript module whose loading runs code: ``__setstate__`` creates a file (through
    ``torch.from_file``, shared), as a hostile model could read or write any other."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.kept = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.kept = torch.from_file(self.marker, True, 8)


def planted_model_file(path: Path, marker: Path, like: Path) -> Path:
    """A model file that runs ``Planted`` when loaded, with the manifest of ``like`` (a real
    model file of the running model's sample rate), so the old daemon read it as a model."""
    with zipfile.ZipFile(like) as archive:
        extra = {Path(name).name: archive.read(name) for name in archive.namelist()
                 if "/extra/" in name}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(Planted(str(marker))), str(path), _extra_files=extra)
    return path


def test_reload_model_loads_nothing_outside_the_model_roots(model_path, tmp_path):
    roots, outside = tmp_path / "models", tmp_path / "outside"
    roots.mkdir()
    marker = tmp_path / "marker"
    planted = planted_model_file(outside / "planted.pt", marker, model_path)
    torch.jit.load(str(planted))  # the file does run code when loaded
    assert marker.exists()
    marker.unlink()
    unreadable = outside / "unreadable.pt"
    shutil.copy(model_path, unreadable)
    unreadable.chmod(0)
    (roots / "link.pt").symlink_to(planted)
    other = tiny_model_file(roots / "other.pt", seed=3, name="other")
    daemon = start(model_path, tmp_path, model_roots=(str(roots),))
    control = daemon.control.endpoint
    try:
        attempts = [str(planted), str(outside / "missing.pt"), str(roots / "missing.pt"),
                    str(unreadable), str(roots / "link.pt"), f"{roots}/../outside/planted.pt",
                    str(roots), "/etc/shadow", "/etc/passwd", "/root", "no-such-name"]
        answers = set()
        for text in attempts:
            reply = control_request(control, {"cmd": "reload_model", "path": text},
                                    timeout_ms=10000)
            assert refused(reply, "control.model_roots"), (text, reply)
            answers.add(reply["error"].replace(repr(text), "X"))
        assert len(answers) == 1, answers  # the answer tells nothing of the file system
        assert not marker.exists(), "the model outside the roots ran"
        assert daemon.model.name == "tiny"
        reply = control_request(control, {"cmd": "reload_model", "path": str(other)},
                                timeout_ms=10000)
        assert reply["ok"] and reply["model"]["name"] == "other", reply
    finally:
        daemon.stop()


# -- what add_source may open -------------------------------------------------------------------


def test_add_source_opens_what_it_checked_no_file_outside_the_roots(model_path, audio_files,
                                                                    tmp_path, monkeypatch):
    root = tmp_path / "archive"
    root.mkdir()
    inside = root / "song.flac"
    shutil.copy(audio_files["b"], inside)
    secret = tmp_path / "secret.flac"
    shutil.copy(audio_files["a"], secret)
    (root / "link.flac").symlink_to(secret)
    # The daemon's working folder lies in a file root, as with `cd /srv/archive; streamtag
    # run`: a spec the check reads as a relative path is then "inside".
    monkeypatch.chdir(root)
    daemon = start(model_path, tmp_path, file_roots=(str(root),))
    control = daemon.control.endpoint
    try:
        specs = [f" file:{secret}", f"\tfile:{secret}", f"\n file:{secret}", f"FILE:{secret}",
                 f"  {secret}", str(secret), f"file:{root}/../secret.flac",
                 "file:link.flac", str(root / "link.flac"), " file:/etc/passwd",
                 str(tmp_path / "missing.flac"), "file:/nonexistent/x.flac"]
        for i, spec in enumerate(specs):
            reply = control_request(control, {"cmd": "add_source", "id": f"s{i}", "spec": spec})
            assert refused(reply, "control.file_roots"), (spec, reply)
        assert daemon.status()["streams"] == {}
        reply = control_request(control, {"cmd": "add_source", "id": "ok", "realtime": True,
                                          "spec": "\tfile:song.flac"})
        assert reply["ok"], reply
        # the same id again while it plays (4 s): refused for the id first, whatever else is
        # wrong with the spec
        for spec in ("\tfile:song.flac", f"file:{secret}"):
            reply = control_request(control, {"cmd": "add_source", "id": "ok", "spec": spec})
            assert refused(reply, "'ok': a stream with that id is already running; remove it "
                                  "first"), reply
        source = daemon.status()["streams"]["ok"]["source"]
        assert source == str(inside)  # the resolved path that was checked is what is opened
    finally:
        daemon.stop()


def test_devices_and_pipes_are_refused_unless_allowed(model_path, tmp_path):
    daemon = start(model_path, tmp_path)
    try:
        for spec in ("device:", "device:default", " device:0", "DEVICE:pulse"):
            reply = control_request(daemon.control.endpoint,
                                    {"cmd": "add_source", "id": "mic", "spec": spec})
            assert refused(reply, "control.allow_devices"), (spec, reply)
        for spec in ("pipe:", " pipe:-"):
            reply = control_request(daemon.control.endpoint,
                                    {"cmd": "add_source", "id": "in", "spec": spec,
                                     "format": "s16le", "rate": 16000, "channels": 1})
            assert refused(reply, "pipe:"), (spec, reply)
        assert daemon.status()["streams"] == {}
    finally:
        daemon.stop()
    daemon = start(model_path, tmp_path, allow_devices=True)
    try:  # allowed: the request is taken (this machine has no such device: it then fails)
        reply = control_request(daemon.control.endpoint,
                                {"cmd": "add_source", "id": "mic", "spec": "device:default",
                                 "reconnect": False})
        assert reply["ok"], reply
    finally:
        daemon.stop()


def test_a_loopback_station_is_refused_unless_its_host_is_allowed(model_path, audio_server,
                                                                  tmp_path):
    server = audio_server(radio=False)
    secret_url = server.url("user:hunter2@")
    daemon = start(model_path, tmp_path)
    try:
        for url in (server.url(), f" {secret_url}", server.url().replace("127.0.0.1",
                                                                          "localhost")):
            reply = control_request(daemon.control.endpoint,
                                    {"cmd": "add_source", "id": "lan", "spec": url})
            assert refused(reply, "allow_hosts"), (url, reply)
            assert "hunter2" not in reply["error"]
        assert server.requests == 0 and daemon.status()["streams"] == {}
    finally:
        daemon.stop()
    daemon = start(model_path, tmp_path, allow_hosts=("127.0.0.1",))
    try:
        reply = control_request(daemon.control.endpoint,
                                {"cmd": "add_source", "id": "lan", "spec": secret_url,
                                 "reconnect": False})
        assert reply["ok"], reply
        wait_until(lambda: daemon.status()["streams"]["lan"]["state"] == "ended", 30,
                   "the allowed station to be played to its end")
        stream = daemon.status()["streams"]["lan"]
        assert stream["counters"]["windows"] > 0
        assert "hunter2" not in json.dumps(stream)
    finally:
        daemon.stop()


def test_add_source_stops_at_max_sources_and_ended_streams_are_forgotten(
        model_path, audio_files, tmp_path, monkeypatch):
    monkeypatch.setattr(daemon_module, "ENDED_KEPT", 3)
    port = free_port()
    daemon = start(model_path, tmp_path, max_sources=2, metrics=MetricsConfig(port=port))
    control = daemon.control.endpoint
    spec = str(audio_files["a"])
    try:
        for sid in ("loop-1", "loop-2"):
            reply = control_request(control, {"cmd": "add_source", "id": sid, "spec": spec,
                                              "realtime": True, "loop": True})
            assert reply["ok"], reply
        reply = control_request(control, {"cmd": "add_source", "id": "third", "spec": spec})
        assert refused(reply, "control.max_sources (2)"), reply
        for sid in ("loop-1", "loop-2"):
            assert control_request(control, {"cmd": "remove_source", "id": sid})["ok"]
        wait_until(daemon.idle, 20, "the looping streams to end")
        for i in range(5):  # one after another: each ends before the next starts
            sid = f"short-{i}"
            reply = control_request(control, {"cmd": "add_source", "id": sid,
                                              "spec": str(audio_files["b"])})
            assert reply["ok"], reply
            wait_until(lambda sid=sid: control_request(control, {"cmd": "status"})["streams"]
                       .get(sid, {}).get("state") == "ended", 20, f"{sid} to end")
        streams = control_request(control, {"cmd": "status"})["streams"]
        assert sorted(streams) == ["short-2", "short-3", "short-4"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
        assert 'stream="short-4"' in text
        for gone in ("loop-1", "loop-2", "short-0", "short-1"):
            assert f'stream="{gone}"' not in text, gone
    finally:
        daemon.stop()


# -- the process: a huge frame, endpoints beyond loopback -------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the most ever resident) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def test_run_refuses_a_public_bind_without_keys_and_a_huge_frame_does_not_grow_it(
        model_path, audio_files, tmp_path, home):
    env = {**os.environ, HOME_ENV: str(home)}
    port = free_port()
    common = ("run", "--model", str(model_path), "--device", "cpu",
              "--publish", f"tcp://0.0.0.0:{port}")
    refused_run = run_streamtag(*common, "--source", str(audio_files["b"]), "--exit-when-done",
                                env=env, timeout=120)
    assert refused_run.returncode == 2, refused_run.stderr
    assert f"publish.endpoint: refusing to bind tcp://0.0.0.0:{port}" in refused_run.stderr
    assert "--insecure" in refused_run.stderr

    control = f"tcp://127.0.0.1:{free_port()}"
    proc = run_streamtag(*common, "--control", control, "--insecure", popen=True, env=env)
    try:
        wait_until(lambda: proc.poll() is not None or _answers(control), 60,
                   "the daemon's control socket")
        assert proc.poll() is None, proc.stderr.read()
        before = memory_kib(proc.pid)
        # libzmq drops the peer: its connection is closed, and no reply comes
        assert _dropped_unanswered(control, b"{" + b" " * (200 * 1024 * 1024) + b"}")
        assert control_request(control, {"cmd": "ping"})["ok"]  # and the socket serves on
        after = memory_kib(proc.pid)
        grown_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
        print(f"daemon VmRSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MiB, "
              f"VmHWM {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MiB")
        assert grown_mib < 50, f"the daemon's peak memory grew {grown_mib:.0f} MiB"
    finally:
        stop_process(proc, timeout=15)
        _, err = proc.communicate()
    assert f"INSECURE (--insecure): publish.endpoint tcp://0.0.0.0:{port}" in err


def _dropped_unanswered(endpoint: str, payload: bytes, timeout_s: float = 30.0) -> bool:
    """Sends ``payload`` on a plain REQ socket: True once the peer has closed the connection
    with no reply sent, False if a reply comes first; TimeoutError if neither does."""
    from zmq.utils.monitor import recv_monitor_message

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(endpoint)
        sock.send(payload)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sock.poll(0, zmq.POLLIN):
                return False
            if monitor.poll(50) and \
                    recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                return not sock.poll(100, zmq.POLLIN)
        raise TimeoutError(f"neither a reply nor a closed connection within {timeout_s} s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def _answers(control: str) -> bool:
    try:
        return control_request(control, {"cmd": "ping"}, timeout_ms=300)["ok"]
    except TimeoutError:
        return False


# -- CURVE: admin keys apart from subscriber keys ---------------------------------------------


def test_under_curve_only_admin_keys_control_and_need_no_token(model_path, tmp_path, caplog):
    keys, clients, admins = tmp_path / "keys", tmp_path / "clients", tmp_path / "admins"
    server_public, server_secret = generate_keys(keys, "server")
    screen_public, screen_secret = generate_keys(keys, "screen")
    admin_public, admin_secret = generate_keys(keys, "admin")
    clients.mkdir()
    admins.mkdir()
    shutil.copy(screen_public, clients)
    shutil.copy(admin_public, admins)
    screen = client_curve(server_public, screen_secret)
    admin = client_curve(server_public, admin_secret)
    token_file = tmp_path / "elsewhere" / "control.token"  # not where clients look
    daemon = start(model_path, tmp_path, token_file=str(token_file),
                   security=SecurityConfig(str(server_secret), str(clients),
                                           admin_keys=str(admins)))
    try:
        endpoint = daemon.control.endpoint
        reply = control_request(endpoint, {"cmd": "status"}, curve=admin)
        assert reply["ok"], reply  # no token: the admin key is the authority
        # a subscriber's key: refused at the handshake, which is said at once, whatever the
        # timeout (before, a silent timeout)
        with pytest.raises(KeyRefused, match="refused this client's CURVE key.*admin_keys"):
            control_request(endpoint, {"cmd": "ping"}, timeout_ms=60_000, curve=screen,
                            token=token_file.read_text().strip())
        wrong_server = client_curve(screen_public, admin_secret)  # not the daemon's key
        with pytest.raises(TimeoutError, match="is --server-key the daemon's public key"):
            control_request(endpoint, {"cmd": "ping"}, timeout_ms=500, curve=wrong_server)
    finally:
        daemon.stop()
    caplog.clear()
    daemon = start(model_path, tmp_path, security=SecurityConfig(str(server_secret),
                                                                 str(clients)))
    try:  # without admin_keys no key controls, and the daemon says so at start
        assert "admits no CURVE key" in caplog.text and "security.admin_keys" in caplog.text
        for curve in (admin, screen):
            with pytest.raises(KeyRefused, match="admin_keys"):
                control_request(daemon.control.endpoint, {"cmd": "ping"}, timeout_ms=60_000,
                                curve=curve)
    finally:
        daemon.stop()


# -- keys generate -------------------------------------------------------------------------------


def test_a_secret_key_is_never_readable_by_others_even_while_it_is_written(tmp_path):
    folder = tmp_path / "keys"
    # An audit hook sees every open: the umask in force when the secret file is created is the
    # mode it is born with (a chmod afterwards leaves a window in which others can read it).
    masks = json.loads(run_python(f"""
import json, os, sys
masks = []
def hook(event, args):
    if event == "open" and str(args[0]).endswith(".key_secret"):
        mask = os.umask(0)
        os.umask(mask)
        masks.append(mask)
sys.addaudithook(hook)
os.umask(0o022)
from streamtag.wire.security import generate_keys
generate_keys({str(folder)!r}, "admin")
print(json.dumps(masks))
"""))
    assert masks and all(mask & 0o077 == 0o077 for mask in masks), masks
    assert (folder / "admin.key_secret").stat().st_mode & 0o777 == 0o600
    assert (folder / "admin.key").stat().st_mode & 0o777 == 0o644

    done = run_streamtag("keys", "generate", str(tmp_path / "cli"), "--name", "admin",
                         timeout=60)
    assert done.returncode == 0, done.stderr
    assert "admin_keys" in done.stdout
    assert (tmp_path / "cli" / "admin.key_secret").stat().st_mode & 0o777 == 0o600
    again = run_streamtag("keys", "generate", str(tmp_path / "cli"), "--name", "admin",
                          timeout=60)
    assert again.returncode == 2 and "admin.key_secret exists" in again.stderr


def test_pages_and_listen_reach_a_daemon_whose_token_file_is_elsewhere(model_path, tmp_path,
                                                                      home, capsys):
    # [control] token_file = ...: the venue page run beside the daemon read the default file
    # and was refused every 4 s; `dashboard` and `listen --control` could not name the file.
    from streamtag.cli import main
    from streamtag.commands.listen import run_listen
    from streamtag.web.server import _request_snapshot

    token_file = tmp_path / "elsewhere" / "control.token"
    daemon = start(model_path, tmp_path, token_file=str(token_file))
    try:
        control = daemon.control.endpoint
        snapshot, status = _request_snapshot(control, None, str(token_file))
        assert snapshot["ok"] and status is not None, snapshot
        refused_snapshot, _ = _request_snapshot(control, None)  # the default file: refused
        assert refused(refused_snapshot, f"pass --token-file {token_file}")
        out = io.StringIO()
        assert run_listen(daemon.publisher.endpoint, tracks=True, control=control, count=1,
                          duration=1, out=out, token=token_file.read_text().strip()) == 0
        assert "no current titles" not in capsys.readouterr().err
        for argv in (["dashboard", "--control", control], ["listen", "--tracks", "--control",
                                                            control]):
            assert main([*argv, "--token-file", str(tmp_path / "missing.token")]) == 2
            assert "cannot read a control token from" in capsys.readouterr().err
    finally:
        daemon.stop()


def test_the_refusal_names_the_keys_each_socket_takes():
    """The control socket admits the keys in [security] admin_keys: its refusal named
    client_keys, which admit subscribers only."""
    from streamtag.commands.run import refuse_or_warn
    from streamtag.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        refuse_or_warn([("control.endpoint", "tcp://0.0.0.0:5557")], insecure=False)
    assert "give [security] server_key and admin_keys" in str(refused.value)
    assert "client_keys" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"give \[security\] server_key and client_keys"):
        refuse_or_warn([("publish.endpoint", "tcp://0.0.0.0:5556")], insecure=False)
